"""sqlgate: a leak-proof connection pool for DB-API drivers, after Go's database/sql."""

from sqlgate.aiopool import AsyncPool
from sqlgate.errors import (
    CircuitOpen,
    ConnectError,
    Error,
    PoolClosed,
    PoolTimeout,
    TooManyWaiters,
)
from sqlgate.pool import Pool
from sqlgate.stats import Stats

__all__ = [
    "AsyncPool",
    "CircuitOpen",
    "ConnectError",
    "Error",
    "Pool",
    "PoolClosed",
    "PoolTimeout",
    "Stats",
    "TooManyWaiters",
]
