"""200 agents connecting at once all get in, and each answers its own echo."""

import concurrent.futures
import os
import re
import time

from harness import BIN, Agent, Hub, run, run_tests, spawn, tmpdir, wait_until

N = int(os.environ.get("RELAYHUB_SCALE_AGENTS", "200"))
hub = Hub().start()
root = tmpdir()


def _make(i):
    d = os.path.join(root, "a%03d" % i)
    out = run([BIN["agent"], "init", "--dir", d, "--hub", hub.url, "--pin", hub.pin]).stdout
    return d, re.search(r"^pubkey: (\S+)$", out, re.M).group(1), \
        re.search(r"^agent_id: (\S+)$", out, re.M).group(1)


def test_200_agents_connect_at_once():
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        made = list(ex.map(_make, range(N)))
    for i, (d, pk, aid) in enumerate(made):
        assert hub.hubctl("agent", "add", "scale-%03d" % i, "--pubkey", pk).stdout.strip() == aid
    t0 = time.monotonic()
    for d, _, _ in made:
        spawn([BIN["agent"], "run", "--dir", d], os.path.join(d, "agent.log"))
    wait_until(lambda: len(hub.agents()) == N, timeout=60, interval=0.2,
               what="all %d agents connected" % N)
    took = time.monotonic() - t0
    print("    %d agents connected in %.2fs" % (N, took))
    ids = {aid for _, _, aid in made}
    assert set(hub.agents()) == ids
    assert hub.metric("relayhub_tunnel_agents_connected") == N
    # no agent needed a refusal to get in
    assert (hub.metric("relayhub_tunnel_handshake_failures_total", 'reason="try_again"') or 0) == 0
    for _, _, aid in list(made)[:: max(1, N // 20)]:
        st, body, _ = hub.echo(aid, "hi " + aid)
        assert st == 200 and body["text"] == "hi " + aid


run_tests(globals())
