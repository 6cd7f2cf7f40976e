"""Faults: a hub-tunnel killed with -9 comes back and every agent reconnects by itself; a
killed or frozen agent is marked gone within the heartbeat timeout; a frozen hub is left."""

import os
import signal
import subprocess
import time

from harness import (Agent, BIN, Hub, find_events, has_event, has_event_with, run_tests,
                     spawn, tmpdir, wait_until)

hub = Hub(sets=["tunnel.heartbeat=300ms", "tunnel.dead_after=1200ms"]).start()
agents = [Agent(hub, "a%d" % i).start() for i in range(5)]
for a in agents:
    a.wait_connected()


def test_kill9_tunnel_agents_reconnect():
    hub.proc.send_signal(signal.SIGKILL)
    hub.proc.wait()
    for a in agents:
        wait_until(lambda: has_event(a.log, "disconnected"), what="agent noticed")
    time.sleep(1.0)  # the hub stays down a while; agents keep retrying
    hub.start()
    t0 = time.monotonic()
    for a in agents:
        a.wait_connected(timeout=40)  # default backoff: 0.5 s base, 30 s cap
    took = time.monotonic() - t0
    for a in agents:
        assert hub.echo(a.id, "back")[0] == 200
        assert a.proc.poll() is None
        assert len(find_events(a.log, "connect_attempt")) >= 2
    print("    all %d agents back %.2fs after the restart" % (len(agents), took))


def test_kill9_agent_marked_gone():
    victim = agents[0]
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait()
    t0 = time.monotonic()
    wait_until(lambda: victim.id not in hub.agents(), timeout=5, what="gone")
    assert time.monotonic() - t0 < 1.2 + 0.5
    assert has_event(hub.log, "agent_gone", agent_id=victim.id)
    st, _, _ = hub.echo(victim.id, "x")
    assert st == 404
    # the others are unaffected
    for a in agents[1:]:
        assert hub.echo(a.id, "ok")[0] == 200


def test_frozen_agent_marked_gone_by_heartbeat():
    """SIGSTOP keeps the TCP connection open: only the heartbeat can tell."""
    victim = agents[1]
    os.kill(victim.proc.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        wait_until(lambda: victim.id not in hub.agents(), timeout=5, what="gone by heartbeat")
        took = time.monotonic() - t0
        assert 0.8 < took < 2.5, took  # dead_after = 1.2 s
        assert has_event(hub.log, "heartbeat_timeout", agent_id=victim.id)
        assert has_event_with(hub.log, "presence", "heartbeat timeout")
    finally:
        os.kill(victim.proc.pid, signal.SIGCONT)
    victim.wait_connected(timeout=40)
    assert hub.echo(victim.id, "awake")[0] == 200


def test_frozen_hub_left_by_agents():
    """An agent whose hub goes silent (half-open TCP) reconnects elsewhere/later by itself."""
    a = agents[2]
    timeouts = len(find_events(hub.log, "heartbeat_timeout"))
    os.kill(hub.proc.pid, signal.SIGSTOP)
    try:
        # the agent's dead_after comes from the hub's welcome (1.2 s here)
        wait_until(lambda: has_event(a.log, "hub_silent"), timeout=8, what="agent gave up")
        time.sleep(2.5 - 1.2)
    finally:
        os.kill(hub.proc.pid, signal.SIGCONT)
    a.wait_connected(timeout=40)
    assert hub.echo(a.id, "again")[0] == 200
    # the hub, stopped itself, did not take its agents' silence for death
    assert has_event(hub.log, "loop_stalled")
    assert len(find_events(hub.log, "heartbeat_timeout")) == timeouts


def test_tunnel_restart_is_clean_after_sigterm():
    """SIGTERM: agents get 1001 and come back when the hub does; exit status 0."""
    a = agents[3]
    a.wait_connected(timeout=40)
    assert hub.stop() == 0
    wait_until(lambda: has_event_with(a.log, "disconnected", "1001"), what="going away seen")
    hub.start()
    a.wait_connected(timeout=40)


run_tests(globals())
