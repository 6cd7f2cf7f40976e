"""Tunnel echo benchmark: round trips per second and p50/p99 latency for
admin → hub-tunnel → agent → back, with 1 and 100 agents (one keep-alive client connection
per agent, requests back to back). Prints its figures; asserts nothing about speed.

usage: /usr/bin/python3 tests/bench/tunnel_echo.py [SECONDS]   (after a build in ./build)
"""

import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from harness import BUILD, Agent, Hub, tmpdir  # noqa: E402

seconds = sys.argv[1] if len(sys.argv) > 1 else "5"
client = os.path.join(BUILD, "tests", "bench", "bench_echo_client")
hub = Hub(sets=["log.level=warn"]).start()
agents = []
for n in (1, 100):
    while len(agents) < n:
        agents.append(Agent(hub, "bench-%03d" % len(agents)).start(sets=["log.level=warn"]))
    for a in agents:
        a.wait_connected(timeout=30)
    out = subprocess.run([client, "127.0.0.1", str(hub.admin_port), hub.token, seconds] +
                         [a.id for a in agents], capture_output=True, text=True, timeout=120)
    sys.stdout.write("tunnel_echo: " + out.stdout)
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
        sys.exit(1)
