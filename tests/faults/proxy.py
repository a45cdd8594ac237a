"""A fault-injecting TCP proxy for tests: loopback only, its own thread and loop.

It sits between a pool and a real database server and can be switched at run
time between modes:

    pass        forward bytes both ways
    latency     forward, after sleeping ``latency`` seconds per chunk
    reset       send RST on every existing connection and each new one
    blackhole   accept, read and drop everything, never answer (existing
                connections go silent too)
    refuse      stop listening: new connections are refused; existing ones
                keep forwarding (unless ``reset_existing``)

The listener is a plain socket bound to an explicit port and served with
``add_reader``, not an ``asyncio.Server``, for two reasons:

* Refusing is ``shutdown()`` on the listening socket, and resuming is
  ``listen()`` on the same socket. The port stays bound in between, so no
  outgoing connection can be given it as its ephemeral source port (a client
  dialing a closed port it happens to own connects to itself), and nothing
  else can take it: ``pass`` always listens again on the same port.
* A connection the kernel had queued when the listener stops is reset by the
  kernel, and one accepted in the same loop step is reset by the proxy: no
  connection is ever forwarded after ``set_mode("refuse")`` returned, and no
  accepted socket is dropped unclosed (asyncio 3.11's ``Server`` can drop one
  accepted while it is being closed).

``set_mode`` returns once the loop thread has carried the switch out. It stops
by itself after ``max_life`` seconds if a test forgets to.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Literal

__all__ = ["MODES", "FaultProxy", "Mode"]

Mode = Literal["pass", "latency", "reset", "blackhole", "refuse"]
MODES: tuple[Mode, ...] = ("pass", "latency", "reset", "blackhole", "refuse")
_LOOPBACK = "127.0.0.1"
_BACKLOG = 128


@dataclass(eq=False)
class _Pipe:
    """One client connection and, unless blackholed, its upstream twin."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None


def _linger0(sock: socket.socket) -> None:
    """Make the next close of ``sock`` send a TCP RST, not a FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _rst(writer: asyncio.StreamWriter) -> None:
    """Abort a connection with a TCP RST (SO_LINGER 0), not a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        _linger0(sock)
    writer.transport.abort()


def _bound_listener() -> socket.socket:
    """A socket bound to an explicit free loopback port (see the module header)."""
    probe = socket.socket()
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        probe.bind((_LOOPBACK, 0))
        port = probe.getsockname()[1]
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Bound to a port given by number, the socket keeps it across
        # shutdown() (Linux releases an auto-bound port instead).
        sock.bind((_LOOPBACK, port))
    finally:
        probe.close()
    sock.setblocking(False)
    return sock


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
        #: Every switch carried out: (time.monotonic() after it, mode, latency).
        self.switches: list[tuple[float, Mode, float]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._run, name="fault-proxy", daemon=True
        )
        self._listener: socket.socket | None = None
        self._listening = False
        self._pipes: set[_Pipe] = set()
        #: Every transport not yet aborted: held, so none is dropped unclosed.
        self._writers: set[asyncio.StreamWriter] = set()
        #: Accepted sockets not yet owned by a transport.
        self._raw: set[socket.socket] = set()
        #: Every task the proxy started (handlers and pumps), until it ends.
        self._tasks: set[asyncio.Task[None]] = set()
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

    def set_mode(
        self, mode: Mode, *, latency: float = 0.0, reset_existing: bool = False
    ) -> float:
        """Switch to ``mode``; return once the proxy acts on it.

        Args:
            mode: one of ``MODES``.
            latency: seconds per forwarded chunk, for ``latency``.
            reset_existing: also RST every open connection, in the same loop
                step as the switch (a database that goes away at once).

        Returns:
            ``time.monotonic()`` just after the switch took effect.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        future = asyncio.run_coroutine_threadsafe(
            self._switch(mode, latency, reset_existing), self._loop
        )
        return future.result(timeout=10)

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
        self._listener = _bound_listener()
        self.port = self._listener.getsockname()[1]
        self._listen()
        self._loop.call_later(self.max_life, self._expired)
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    def _expired(self) -> None:
        self._stopped = True
        self._spawn(self._shutdown())

    def _spawn(self, coro: object) -> asyncio.Task[None]:
        task: asyncio.Task[None] = self._loop.create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _listen(self) -> None:
        assert self._listener is not None
        if not self._listening:
            self._listener.listen(_BACKLOG)
            self._loop.add_reader(self._listener.fileno(), self._on_readable)
            self._listening = True

    def _unlisten(self) -> None:
        """Stop listening: the kernel resets connections still in the backlog."""
        if self._listener is not None and self._listening:
            self._loop.remove_reader(self._listener.fileno())
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listening = False

    def _on_readable(self) -> None:
        listener = self._listener
        while listener is not None and self._listening:
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self.accepted += 1
            conn.setblocking(False)
            if self.mode in ("reset", "refuse"):
                # refuse: accepted in the same step the listener stopped.
                self.resets += 1
                _linger0(conn)
                conn.close()
                continue
            self._raw.add(conn)
            self._spawn(self._accept(conn))

    async def _switch(self, mode: Mode, latency: float, reset_existing: bool) -> float:
        self.mode = mode
        self.latency = latency
        if mode == "refuse":
            self._unlisten()
        else:
            self._listen()
        if mode == "reset" or reset_existing:
            for pipe in list(self._pipes):
                self._kill(pipe)
        now = time.monotonic()
        self.switches.append((now, mode, latency))
        return now

    async def _shutdown(self) -> None:
        self._unlisten()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        me = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not me]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for pipe in list(self._pipes):
            self._kill(pipe)
        for writer in list(self._writers):
            self._abort(writer)
        for sock in list(self._raw):
            sock.close()
        self._raw.clear()
        # Aborted transports close their sockets on the next loop iterations.
        for _ in range(3):
            await asyncio.sleep(0)
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

    async def _accept(self, conn: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_connection(sock=conn)
        except OSError:
            conn.close()
            return
        finally:
            self._raw.discard(conn)
        self._writers.add(writer)
        pipe = _Pipe(writer)
        if self.mode in ("reset", "refuse"):  # switched while wrapping it
            self.resets += 1
            self._abort(writer, rst=True)
            return
        self._pipes.add(pipe)
        if self.mode == "blackhole":
            await self._swallow_forever(reader, pipe)
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
        self._spawn(self._pump(up_reader, writer, pipe))
        await self._pump(reader, up_writer, pipe)

    async def _swallow_forever(self, reader: asyncio.StreamReader, pipe: _Pipe) -> None:
        with contextlib.suppress(OSError):
            while await reader.read(65536):
                pass
        self._close(pipe)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pipe: _Pipe
    ) -> None:
        with contextlib.suppress(OSError):
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
        self._close(pipe)

    def _close(self, pipe: _Pipe) -> None:
        if pipe not in self._pipes:
            return
        self._pipes.discard(pipe)
        self._abort(pipe.client)
        if pipe.upstream is not None:
            self._abort(pipe.upstream)
