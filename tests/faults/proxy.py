"""A fault-injecting TCP proxy for tests: loopback only, its own thread and loop.

It sits between a pool and a real database server and can be switched at run
time between modes:

    pass        forward bytes both ways
    latency     forward, after sleeping ``latency`` seconds per chunk
    reset       send RST on every existing connection and each new one
    blackhole   accept, read and drop everything, never answer (existing
                connections go silent too)
    refuse      close the listener: new connections are refused; existing
                ones keep forwarding

It stops by itself after ``max_life`` seconds if a test forgets to.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["MODES", "FaultProxy", "Mode"]

Mode = Literal["pass", "latency", "reset", "blackhole", "refuse"]
MODES: tuple[Mode, ...] = ("pass", "latency", "reset", "blackhole", "refuse")
_LOOPBACK = "127.0.0.1"


@dataclass(eq=False)
class _Pipe:
    """One client connection and, unless blackholed, its upstream twin."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def _rst(writer: asyncio.StreamWriter) -> None:
    """Abort a connection with a TCP RST (SO_LINGER 0), not a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
    writer.transport.abort()


class FaultProxy:
    """A TCP proxy to ``127.0.0.1:upstream_port`` with switchable faults.

    Use ``start()`` / ``stop()`` (or ``with``); ``port`` is where clients
    connect; ``set_mode`` switches faults from any thread.
    """

    def __init__(self, upstream_port: int, *, max_life: float = 300.0) -> None:
        self.upstream_port = upstream_port
        self.max_life = max_life
        self.port = 0
        self.mode: Mode = "pass"
        self.latency = 0.0
        #: Connections accepted, in total, and those reset by the proxy.
        self.accepted = 0
        self.resets = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._run, name="fault-proxy", daemon=True
        )
        self._server: asyncio.Server | None = None
        self._pipes: set[_Pipe] = set()
        #: Every transport not yet aborted: held, so none is dropped unclosed.
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._stopped = False

    # -- control (any thread) --------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fault proxy did not start")
        return self

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def set_mode(self, mode: Mode, *, latency: float = 0.0) -> None:
        """Switch to ``mode``; returns once the proxy acts on it."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        future = asyncio.run_coroutine_threadsafe(
            self._switch(mode, latency), self._loop
        )
        future.result(timeout=10)

    @property
    def open_pipes(self) -> int:
        """Client connections currently held by the proxy."""
        return len(self._pipes)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._thread.is_alive():
            with contextlib.suppress(RuntimeError):
                asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(
                    timeout=10
                )
            self._thread.join(10)

    # -- the loop thread ---------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._listen())
        self.port = self._sockport()
        self._loop.call_later(self.max_life, self._expired)
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    def _expired(self) -> None:
        self._stopped = True
        self._loop.create_task(self._shutdown())

    def _sockport(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, _LOOPBACK, self.port, reuse_address=True
        )

    async def _switch(self, mode: Mode, latency: float) -> None:
        old = self.mode
        self.mode = mode
        self.latency = latency
        if mode == "refuse" and self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        elif mode != "refuse" and old == "refuse":
            await self._listen()
        if mode == "reset":
            for pipe in list(self._pipes):
                self._kill(pipe)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        tasks = [t for p in self._pipes for t in p.tasks]
        for pipe in list(self._pipes):
            self._kill(pipe)
        for writer in list(self._writers):
            self._abort(writer)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Aborted transports close their sockets on the next loop iterations.
        await asyncio.sleep(0.05)
        self._loop.stop()

    def _abort(self, writer: asyncio.StreamWriter, *, rst: bool = False) -> None:
        if rst:
            _rst(writer)
        else:
            writer.transport.abort()
        self._writers.discard(writer)

    def _kill(self, pipe: _Pipe) -> None:
        self.resets += 1
        self._abort(pipe.client, rst=True)
        if pipe.upstream is not None:
            self._abort(pipe.upstream)
        self._pipes.discard(pipe)

    async def _accept(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.accepted += 1
        self._writers.add(writer)
        pipe = _Pipe(writer)
        if self.mode == "reset":
            self.resets += 1
            self._abort(writer, rst=True)
            return
        self._pipes.add(pipe)
        if self.mode == "blackhole":
            await self._drain_forever(reader, pipe)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(
                _LOOPBACK, self.upstream_port
            )
        except OSError:
            self._kill(pipe)
            return
        pipe.upstream = up_writer
        self._writers.add(up_writer)
        if pipe not in self._pipes:  # reset while connecting upstream
            self._abort(up_writer)
            return
        pipe.tasks = [
            asyncio.current_task(),  # type: ignore[list-item]
            asyncio.create_task(self._pump(up_reader, writer, pipe)),
        ]
        await self._pump(reader, up_writer, pipe)

    async def _drain_forever(self, reader: asyncio.StreamReader, pipe: _Pipe) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while await reader.read(65536):
                pass
        self._close(pipe)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pipe: _Pipe
    ) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if self.mode == "blackhole":
                    continue  # swallowed: the other side never hears of it
                if self.mode == "latency" and self.latency > 0:
                    await asyncio.sleep(self.latency)
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        self._close(pipe)

    def _close(self, pipe: _Pipe) -> None:
        if pipe not in self._pipes:
            return
        self._pipes.discard(pipe)
        self._abort(pipe.client)
        if pipe.upstream is not None:
            self._abort(pipe.upstream)
