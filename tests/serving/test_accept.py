"""How a scoring server takes connections from the listening socket it shares with the other
servers of its deployment (:class:`mlops_lab.serving.server.Acceptor`), on a real socket and
event loop."""

from __future__ import annotations

import asyncio
import select
import socket

from mlops_lab.serving.server import Acceptor


class Recorder(asyncio.Protocol):
    made: list[asyncio.Transport] = []

    def connection_made(self, transport):
        Recorder.made.append(transport)


def _pending(listener: socket.socket) -> bool:
    return bool(select.select([listener], [], [], 0)[0])


def _run(peers: bool, held: int, keep_accepting: bool = False):
    """Five connections wait; the acceptor is told once that the socket is readable (and, unless
    ``keep_accepting``, stopped before it looks again). Returns how many it accepted, whether
    connections still wait, and the delays it asked to look again after."""
    listener = socket.create_server(("127.0.0.1", 0))
    clients = [socket.create_connection(listener.getsockname()) for _ in range(5)]
    Recorder.made = []
    later: list[float] = []

    async def main():
        loop = asyncio.get_running_loop()
        real_call_later = loop.call_later
        def call_later(delay, cb, *args):
            if getattr(cb, "__name__", "") == "_resume":
                later.append(delay)
            return real_call_later(delay, cb, *args)

        loop.call_later = call_later
        acceptor = Acceptor(listener, Recorder, loop, connections=set(range(held)), peers=peers)
        acceptor.accepting = True
        acceptor._ready()  # the socket became readable
        acceptor.accepting = keep_accepting
        await asyncio.sleep(0.05)  # the accepted connections are served
        made = len(Recorder.made)
        waiting = _pending(listener)
        acceptor.stop()
        for t in Recorder.made:
            t.close()
        return made, waiting

    try:
        made, waiting = asyncio.run(main())
    finally:
        for c in clients:
            c.close()
        listener.close()
    return made, waiting, later


def test_takes_one_connection_per_turn_and_leaves_the_rest_to_its_peers():
    made, waiting, later = _run(peers=True, held=4)
    assert made == 1 and waiting  # four still wait for whichever server looks first
    assert later == [4 * 30e-6]  # holding 4 connections, it looks again after 120 us


def test_the_pause_grows_with_the_connections_held_up_to_32():
    assert _run(peers=True, held=100)[2] == [32 * 30e-6]


def test_alone_on_its_socket_it_looks_again_at_once():
    made, waiting, later = _run(peers=False, held=10)
    assert made == 1 and waiting and later == []


def test_it_looks_again_after_the_pause_and_takes_the_others():
    made, waiting, later = _run(peers=True, held=0, keep_accepting=True)
    assert made == 5 and not waiting and later[0] == 0.0


def test_a_connection_taken_just_before_a_stop_is_handed_over_before_the_shutdown():
    """The server's shutdown closes the connections uvicorn knows; ``settle`` makes sure one
    accepted just before is among them (else it would keep the shutdown waiting)."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    Recorder.made = []

    async def main():
        acceptor = Acceptor(listener, Recorder, asyncio.get_running_loop(), peers=True)
        acceptor.start()
        acceptor._ready()  # accepted; handing it to the protocol is a task not yet run
        acceptor.stop()
        assert Recorder.made == [] and len(acceptor.starting) == 1
        await acceptor.settle()
        assert len(Recorder.made) == 1 and not acceptor.starting
        Recorder.made[0].close()

    try:
        asyncio.run(main())
    finally:
        client.close()
        listener.close()
