"""Pool SQLite connections from 16 threads and print the pool's figures."""

from __future__ import annotations

import sqlite3
import tempfile
import threading
from pathlib import Path

import sqlgate


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "example.db"
        with sqlite3.connect(path) as setup:
            setup.execute("create table hits (n integer)")
        pool = sqlgate.Pool(
            lambda: sqlite3.connect(path, check_same_thread=False, timeout=30),
            max_open=4,
            max_idle=4,
        )

        def worker() -> None:
            for _ in range(250):
                with pool.connection() as conn:
                    conn.execute("insert into hits values (1)")
                    conn.commit()

        threads = [threading.Thread(target=worker) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with pool.connection() as conn:
            (count,) = conn.execute("select count(*) from hits").fetchone()
        print(f"rows inserted: {count}")
        print(pool.stats())
        pool.close()


if __name__ == "__main__":
    main()
