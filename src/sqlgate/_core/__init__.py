"""The pure core: every pool rule and decision, no I/O, stdlib only.

``machine`` is the pool's state machine (``PoolCore``; its header is the
theory of operation), ``config`` the pool's knobs with their defaults and
validation, ``states`` the named states and the moves allowed between
them, ``retry`` the handle's bad-connection retry rule. This package
re-exports what the shells and the tests use, so they import from
``sqlgate._core`` and need not know which module holds what.
"""

from __future__ import annotations

from sqlgate._core import machine as _machine
from sqlgate._core.config import (
    CIRCUIT_AFTER,
    FOREVER,
    MAX_CONNECTING,
    PoolConfig,
    validate_duration,
    validate_int,
)
from sqlgate._core.machine import (
    BROKEN,
    CIRCUIT_BACKOFF,
    CONNECTION_ERRORS,
    LEAKED,
    LIFETIME_JITTER,
    MAX_IDLE,
    MAX_IDLE_TIME,
    MAX_LIFETIME,
    MAX_OPEN,
    POOL_CLOSED,
    PROGRAMMING_ERRORS,
    REFILL_BACKOFF,
    Close,
    Connect,
    Effect,
    Entry,
    InvariantError,
    PoolCore,
    Waiter,
    Wake,
    is_programming_error,
)
from sqlgate._core.states import (
    ABANDONED,
    CLOSED,
    CLOSING,
    ENTRY_MOVES,
    FAILED,
    IDLE,
    IN_USE,
    NAMES,
    NEW,
    SERVED,
    WAITER_MOVES,
    WAITING,
)

#: Whether the compiled build is running: the core's modules are C extensions
#: built by mypyc (see setup.py), not the ``.py`` source beside them.
compiled: bool = not (_machine.__file__ or "").endswith(".py")

__all__ = [
    "ABANDONED",
    "BROKEN",
    "CIRCUIT_AFTER",
    "CIRCUIT_BACKOFF",
    "CLOSED",
    "CLOSING",
    "CONNECTION_ERRORS",
    "ENTRY_MOVES",
    "FAILED",
    "FOREVER",
    "IDLE",
    "IN_USE",
    "LEAKED",
    "LIFETIME_JITTER",
    "MAX_CONNECTING",
    "MAX_IDLE",
    "MAX_IDLE_TIME",
    "MAX_LIFETIME",
    "MAX_OPEN",
    "NAMES",
    "NEW",
    "POOL_CLOSED",
    "PROGRAMMING_ERRORS",
    "REFILL_BACKOFF",
    "SERVED",
    "WAITER_MOVES",
    "WAITING",
    "Close",
    "Connect",
    "Effect",
    "Entry",
    "InvariantError",
    "PoolConfig",
    "PoolCore",
    "Waiter",
    "Wake",
    "compiled",
    "is_programming_error",
    "validate_duration",
    "validate_int",
]
