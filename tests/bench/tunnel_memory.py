"""Tunnel memory benchmark: hub-tunnel's resident memory per connected, idle agent.
Prints its figures; asserts nothing.

usage: /usr/bin/python3 tests/bench/tunnel_memory.py [AGENTS]   (after a build in ./build)
"""

import concurrent.futures
import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from harness import BIN, Hub, run, spawn, tmpdir, wait_until  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 200


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    return 0


hub = Hub(sets=["log.level=warn"]).start()
idle = rss_kib(hub.proc.pid)
root = tmpdir()


def make(i):
    d = os.path.join(root, "a%04d" % i)
    out = run([BIN["agent"], "init", "--dir", d, "--hub", hub.url, "--pin", hub.pin]).stdout
    return d, re.search(r"^pubkey: (\S+)$", out, re.M).group(1)


with concurrent.futures.ThreadPoolExecutor(8) as ex:
    made = list(ex.map(make, range(N)))
for i, (d, pk) in enumerate(made):
    hub.hubctl("agent", "add", "mem-%04d" % i, "--pubkey", pk)
procs = [spawn([BIN["agent"], "run", "--dir", d, "--set", "log.level=warn"],
               os.path.join(d, "agent.log")) for d, _ in made]
wait_until(lambda: len(hub.agents()) == N, timeout=120, interval=0.2, what="agents connected")
time.sleep(1.0)
busy = rss_kib(hub.proc.pid)
print("tunnel_memory: agents=%d hub_rss_idle_kib=%d hub_rss_kib=%d per_agent_kib=%.1f "
      "agent_rss_kib=%d" % (N, idle, busy, (busy - idle) / N, rss_kib(procs[0].pid)))
