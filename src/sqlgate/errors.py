"""The exceptions sqlgate raises; a leaf module that imports nothing of the project."""

from __future__ import annotations

__all__ = [
    "CircuitOpen",
    "ConnectError",
    "DeadlineExceeded",
    "Error",
    "PoolClosed",
    "PoolTimeout",
    "TooManyWaiters",
    "TransactionAborted",
]


class Error(Exception):
    """Base class of every error sqlgate raises itself."""

    __module__ = "sqlgate"


class PoolClosed(Error):
    """The pool was closed: before the call, or while the caller was waiting."""

    __module__ = "sqlgate"


class PoolTimeout(Error, TimeoutError):
    """No connection became available within the acquire timeout.

    When a connect attempt failed recently, that driver error is chained as
    ``__cause__``: a timeout while the database is down says why.
    """

    __module__ = "sqlgate"


class DeadlineExceeded(Error, TimeoutError):
    """A call's deadline (``timeout=``, or the handle's ``statement_timeout``) passed.

    Raised when the deadline passed while the call waited for a connection
    (the pool's ``PoolTimeout`` is ``__cause__``), before its statement was
    sent (nothing was sent), or while its statement ran: the statement was
    then cancelled on the server where the driver can, and the driver's
    error (its "statement cancelled") is ``__cause__``. The connection was
    kept only when the driver left it in a known clean state, else
    discarded; a transaction it happened in is over (rolled back).
    """

    __module__ = "sqlgate"
    #: The handle's verdict on the connection the call ran on: discard it.
    _discard: bool = False


class TooManyWaiters(Error):
    """``max_waiting`` callers are already queued; this one was refused at once."""

    __module__ = "sqlgate"


class ConnectError(Error):
    """The driver failed to open a connection; its exception is ``__cause__``.

    A programming error raised while dialing (a TypeError, ValueError,
    AttributeError... from the connect callable or a driver adapter, never an
    OSError) is not wrapped: the caller gets it as it is, and it counts as no
    failed dial (the circuit breaker ignores it).
    """

    __module__ = "sqlgate"


class CircuitOpen(ConnectError):
    """The database is unreachable: recent dials all failed, so this one was refused.

    Raised at once, instead of waiting out the acquire timeout, while the
    pool's circuit breaker is open (``circuit_after`` dials failed in a row).
    The last dial error is ``__cause__``; ``unreachable_since`` is when the
    circuit opened (``time.monotonic()`` seconds). One probe keeps dialing in
    the background; its first success closes the circuit.
    """

    __module__ = "sqlgate"
    unreachable_since: float = 0.0


class TransactionAborted(Error):
    """A commit found its transaction already aborted: nothing was committed.

    PostgreSQL aborts a transaction at its first error, even one the caller
    caught; a COMMIT then answers ROLLBACK (Go's pgx: ``ErrTxCommitRollback``).
    Raised by ``Tx.commit()`` and by leaving ``pool.connection()``'s block
    normally, after the transaction was rolled back.
    """

    __module__ = "sqlgate"


class InvariantError(AssertionError):
    """``PoolCore.check()`` found a broken invariant; the message names it.

    Internal: the core's self-check raises it (tests and the debug mode call
    that check); it lives here because a compiled core cannot define a
    subclass of a builtin exception.
    """
