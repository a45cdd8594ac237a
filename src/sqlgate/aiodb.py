"""The former name of ``sqlgate.db_async`` (the asyncio handle), kept importable.

New code imports ``sqlgate.AsyncDB``/``sqlgate.open_async``, or
``sqlgate.db_async``.
"""

from sqlgate.db_async import (
    AsyncConn,
    AsyncDB,
    AsyncRows,
    AsyncTx,
    Result,
    open_async,
)

__all__ = ["AsyncConn", "AsyncDB", "AsyncRows", "AsyncTx", "Result", "open_async"]
