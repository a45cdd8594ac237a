"""sqlgate: a leak-proof connection pool for DB-API drivers, after Go's database/sql."""

from sqlgate._core import compiled
from sqlgate._handle import RowFactory, dict_row, namedtuple_row, tuple_row
from sqlgate.aiopool import AsyncPool
from sqlgate.db import DB, Conn, Result, Rows, Tx, open
from sqlgate.db_async import AsyncDB, open_async
from sqlgate.errors import (
    CircuitOpen,
    ConnectError,
    DeadlineExceeded,
    Error,
    PoolClosed,
    PoolTimeout,
    TooManyWaiters,
    TransactionAborted,
)
from sqlgate.pool import Pool
from sqlgate.stats import Stats

__version__ = "0.1.0"

__all__ = [
    "DB",
    "AsyncDB",
    "AsyncPool",
    "CircuitOpen",
    "Conn",
    "ConnectError",
    "DeadlineExceeded",
    "Error",
    "Pool",
    "PoolClosed",
    "PoolTimeout",
    "Result",
    "RowFactory",
    "Rows",
    "Stats",
    "TooManyWaiters",
    "TransactionAborted",
    "Tx",
    "compiled",
    "dict_row",
    "namedtuple_row",
    "open",
    "open_async",
    "tuple_row",
]
