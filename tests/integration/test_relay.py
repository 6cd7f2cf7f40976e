"""hub-tunnel relays streams between gateways (ZeroMQ) and agents (WebSocket): many streams per
agent connection, in order, both directions; a gateway or agent that goes away ends its streams
cleanly on the other side. The gateway and the agent here are hand-driven (a DEALER socket and
a raw tunnel client) so every envelope can be checked."""

import asyncio
import os

import zmq

from harness import (Agent, Hub, RawClient, arun, envelope, load_agent_key, run_tests,
                     unpack, wait_until)

hub = Hub().start()
reg = Agent(hub, "relay-agent")           # registered, driven by hand below
key = load_agent_key(reg.dir)
hub.wait_registry(1)
ctx = zmq.Context()


def gateway(name=b"gw-1"):
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.ROUTING_ID, name)
    s.setsockopt(zmq.RCVTIMEO, 5000)
    s.connect("ipc://" + os.path.join(hub.dir, "tunnel.ipc"))
    return s


async def connected_agent():
    c = await RawClient(hub).connect()
    w = await c.handshake(reg.id, key)
    assert w["type"] == "welcome", w
    return c


async def agent_recv(c, want_type, timeout=5):
    """Next envelope of want_type (pings are answered and skipped)."""
    while True:
        e = await c.recv(timeout)
        if e["type"] == "ping":
            await c.send(envelope("pong", e["payload"]))
            continue
        assert e["type"] == want_type, e
        return e


def gw_recv(s):
    return unpack(s.recv())


def open_env(rid, attempt=1, agent_id=None):
    return envelope("req.open", {"agent_id": agent_id or reg.id, "attempt": attempt,
                                 "format": "openai", "model": "m", "method": "POST",
                                 "path": "/v1/chat/completions", "headers": [["a", "b"]],
                                 "body_size": 5}, req_id=rid)


def test_stream_round_trip():
    async def go():
        a = await connected_agent()
        g = gateway()
        rid = os.urandom(16)
        g.send(open_env(rid))
        e = await agent_recv(a, "req.open")
        assert e["req_id"] == rid and e["payload"]["path"] == "/v1/chat/completions"
        assert e["payload"]["attempt"] == 1
        g.send(envelope("req.body", {"data": b"hello"}, req_id=rid))
        assert (await agent_recv(a, "req.body"))["payload"]["data"] == b"hello"
        await a.send(envelope("credit", {"bytes": 65536}, req_id=rid))
        await a.send(envelope("resp.head", {"status": 200, "headers": [["content-type",
                                                                        "text/event-stream"]]},
                              req_id=rid))
        for i in range(3):
            await a.send(envelope("resp.chunk", {"data": b"data: %d\n\n" % i}, req_id=rid))
        await a.send(envelope("resp.end", {"input_tokens": 3, "output_tokens": 4}, req_id=rid))
        got = [gw_recv(g) for _ in range(6)]
        assert [x["type"] for x in got] == ["credit", "resp.head", "resp.chunk", "resp.chunk",
                                            "resp.chunk", "resp.end"], got
        assert all(x["req_id"] == rid for x in got)
        assert [x["payload"]["data"] for x in got[2:5]] == [b"data: 0\n\n", b"data: 1\n\n",
                                                           b"data: 2\n\n"]
        assert got[5]["payload"]["output_tokens"] == 4
        g.send(envelope("credit", {"bytes": 1000}, req_id=rid))   # after the end: ignored
        wait_until(lambda: hub.metric("relayhub_tunnel_streams_open") == 0, what="stream gone")
        g.close()
        await a.close()
    arun(go())


def test_many_streams_multiplexed_in_order():
    async def go():
        a = await connected_agent()
        g = gateway(b"gw-many")
        rids = [os.urandom(16) for _ in range(100)]
        for r in rids:
            g.send(open_env(r))
        for _ in rids:
            await agent_recv(a, "req.open")
        # interleave: chunk i of every stream, round-robin
        for i in range(5):
            for r in rids:
                await a.send(envelope("resp.chunk", {"data": b"%d" % i}, req_id=r))
        for r in rids:
            await a.send(envelope("resp.end", {}, req_id=r))
        seen = {r: [] for r in rids}
        ended = 0
        while ended < len(rids):
            e = gw_recv(g)
            if e["type"] == "resp.end":
                ended += 1
                assert seen[e["req_id"]] == [b"0", b"1", b"2", b"3", b"4"]
            else:
                seen[e["req_id"]].append(e["payload"]["data"])
        assert hub.metric("relayhub_tunnel_streams_total") >= 101
        g.close()
        await a.close()
    arun(go())


def test_cancel_reaches_agent_and_late_chunks_are_refused():
    async def go():
        a = await connected_agent()
        g = gateway(b"gw-cancel")
        rid = os.urandom(16)
        g.send(open_env(rid))
        await agent_recv(a, "req.open")
        g.send(envelope("req.cancel", {"reason": "user went away"}, req_id=rid))
        e = await agent_recv(a, "req.cancel")
        assert e["req_id"] == rid and e["payload"]["reason"] == "user went away"
        # a chunk the agent had in flight: the tunnel tells it again to stop
        await a.send(envelope("resp.chunk", {"data": b"late"}, req_id=rid))
        e = await agent_recv(a, "req.cancel")
        assert e["req_id"] == rid
        g.setsockopt(zmq.RCVTIMEO, 300)
        try:
            g.recv()
            assert False, "the gateway got something for a cancelled stream"
        except zmq.Again:
            pass
        g.close()
        await a.close()
    arun(go())


def test_agent_gone_ends_streams_with_an_error():
    async def go():
        a = await connected_agent()
        g = gateway(b"gw-agent-gone")
        rids = [os.urandom(16) for _ in range(3)]
        for r in rids:
            g.send(open_env(r))
        for _ in rids:
            await agent_recv(a, "req.open")
        await a.send(envelope("resp.chunk", {"data": b"partial"}, req_id=rids[0]))
        assert gw_recv(g)["type"] == "resp.chunk"
        await a.ws.close()   # the agent disconnects mid-stream
        ends = [gw_recv(g) for _ in rids]
        assert sorted(e["req_id"] for e in ends) == sorted(rids)
        for e in ends:
            assert e["type"] == "resp.end" and "agent gone" in e["payload"]["error"], e
        g.close()
    arun(go())


def test_gateway_gone_cancels_at_the_agent():
    async def go():
        a = await connected_agent()
        g = gateway(b"gw-vanishing")
        rid = os.urandom(16)
        g.send(open_env(rid))
        await agent_recv(a, "req.open")
        g.close()            # the gateway process went away
        await asyncio.sleep(0.3)
        await a.send(envelope("resp.chunk", {"data": b"anyone?"}, req_id=rid))
        e = await agent_recv(a, "req.cancel")
        assert e["req_id"] == rid and "gateway" in e["payload"]["reason"]
        await a.close()
    arun(go())


def test_refusals_to_the_gateway():
    g = gateway(b"gw-refused")
    rid = os.urandom(16)
    g.send(open_env(rid, agent_id="f" * 32))
    e = gw_recv(g)
    assert e["type"] == "error" and e["payload"]["code"] == 503 and e["req_id"] == rid, e
    g.send(envelope("req.body", {"data": b"x"}, req_id=os.urandom(16)))
    e = gw_recv(g)
    assert e["type"] == "error" and e["payload"]["code"] == 404, e
    g.send(envelope("req.open", {"agent_id": reg.id}))   # no req_id
    e = gw_recv(g)
    assert e["type"] == "error" and e["payload"]["code"] == 400, e
    g.close()


def test_retry_supersedes_the_first_attempt():
    async def go():
        a = await connected_agent()
        g = gateway(b"gw-retry")
        rid = os.urandom(16)
        g.send(open_env(rid, attempt=1))
        await agent_recv(a, "req.open")
        g.send(open_env(rid, attempt=2))
        e = await agent_recv(a, "req.cancel")   # attempt 1 is over
        assert e["req_id"] == rid
        e = await agent_recv(a, "req.open")
        assert e["payload"]["attempt"] == 2
        await a.send(envelope("resp.end", {}, req_id=rid))
        assert gw_recv(g)["type"] == "resp.end"
        g.close()
        await a.close()
    arun(go())


def test_presence_carries_models_and_load():
    async def go():
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.setsockopt(zmq.RCVTIMEO, 6000)
        sub.connect("ipc://" + os.path.join(hub.dir, "presence.ipc"))
        await asyncio.sleep(0.3)
        a = await connected_agent()
        g = gateway(b"gw-presence")
        rid = os.urandom(16)
        g.send(open_env(rid))
        await agent_recv(a, "req.open")
        await a.send(envelope("presence", {"agent_id": reg.id, "state": "up",
                                           "models": ["gpt-4o", "gpt-4o-mini"], "capacity": 4}))
        deadline = asyncio.get_event_loop().time() + 6
        while True:
            assert asyncio.get_event_loop().time() < deadline, "no presence with models"
            e = unpack(sub.recv())
            p = e["payload"]
            if p.get("models"):
                break
        assert e["type"] == "presence" and p["agent_id"] == reg.id and p["state"] == "up"
        assert p["models"] == ["gpt-4o", "gpt-4o-mini"] and p["capacity"] == 4
        assert p["in_flight"] == 1 and p["tunnel"] == "tunnel-1"
        # the full refresh repeats it (tunnel.presence_interval, 2 s by default)
        e = unpack(sub.recv())
        assert e["payload"]["agent_id"] == reg.id and e["payload"]["models"] == p["models"]
        # an agent cannot speak for another
        await a.send(envelope("presence", {"agent_id": "e" * 32, "state": "up",
                                           "models": ["x"]}))
        g.send(envelope("req.cancel", {}, req_id=rid))
        sub.close()
        g.close()
        await a.close()
    arun(go())


try:
    run_tests(globals())
finally:
    ctx.term()
