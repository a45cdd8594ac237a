#!/usr/bin/env python3
"""SQLAlchemy's own test suite, run on QueuePool and then on sqlgate's pools.

The judge of ``sqlgate.integrations.sqlalchemy``: it takes the sdist of the
SQLAlchemy that is installed (from PyPI, cached outside the repository), runs
chosen parts of its suite on each backend twice, first as SQLAlchemy ships
(``QueuePool`` / ``AsyncAdaptedQueuePool``), then with the pytest plugin
``scripts/pytest_plugins/sqlgate_pools.py`` building every pool that
``create_engine`` would build as one of those (the dialect's default, or a
test's ``poolclass=``) as ``SqlgatePool`` / ``AsyncSqlgatePool`` instead,
and prints the difference: a table of
pass/fail/skip per suite and backend for both runs, then every test whose
outcome differs. Tests that differ are run again on their own, on both pools,
so that a timing test the loaded machine failed once is not counted.

Exit status: 0 when every difference left is one of ``BOUND_TO_QUEUEPOOL``
(tests that read QueuePool's private state; each says why), 1 otherwise, 2
when a backend could not be reached or a sqlgate run switched no engine.

Examples::

    .venv/bin/python scripts/sqlalchemy_suite.py                 # everything
    .venv/bin/python scripts/sqlalchemy_suite.py --backend sqlite --suite engine
    .venv/bin/python scripts/sqlalchemy_suite.py --ci            # the CI slice
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
import time
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLUGIN_DIR = HERE / "pytest_plugins"
PG = "postgres@127.0.0.1:5432"
MARIADB = "root@127.0.0.1:3306"
#: The database the suite runs in, on each server (its own, so that tables
#: other test runs leave in ``test`` do not show up in reflection tests).
#: ``SQLGATE_SA_DB`` names another, so that two judges can share PostgreSQL.
DB = os.environ.get("SQLGATE_SA_DB", "sqlgate_sa")

#: Backend -> SQLAlchemy URL. File databases for SQLite (``:memory:`` gets
#: SingletonThreadPool / StaticPool, never QueuePool), in the run's directory
#: (``{out}``). One judge at a time per server: the suite's tables have fixed
#: names.
BACKENDS: dict[str, str] = {
    "sqlite": "sqlite:///{out}/querytest.db",
    "aiosqlite": "sqlite+aiosqlite:///{out}/async_querytest.db",
    "psycopg": f"postgresql+psycopg://{PG}/{DB}",
    "asyncpg": f"postgresql+asyncpg://{PG}/{DB}",
    "pymysql": f"mysql+pymysql://{MARIADB}/{DB}?charset=utf8mb4",
}

#: Suite -> paths in the sdist; ``{dialect}`` is the backend's directory of
#: dialect tests (``DIALECT_DIRS``). The dialect suite is SQLAlchemy's
#: generic one for third-party dialects (``test_suite.py``) plus the
#: backend's own.
SUITES: dict[str, list[str]] = {
    "engine": ["test/engine"],
    "sql": ["test/sql"],
    "orm": ["test/orm/test_session.py", "test/orm/test_transaction.py"],
    "dialect": ["test/dialect/test_suite.py", "test/dialect/{dialect}"],
}

#: Backend -> its directory under test/dialect.
DIALECT_DIRS: dict[str, str] = {
    "sqlite": "sqlite",
    "aiosqlite": "sqlite",
    "psycopg": "postgresql",
    "asyncpg": "postgresql",
    "pymysql": "mysql",
}

#: The CI slice: the files where the pool's contract is exercised most
#: (reconnects, invalidation, dispose, transactions), kept to a few minutes on
#: two cores. test_pool.py builds its pools by hand, so it runs the same on
#: both sides; the full runs above cover the rest.
CI_BACKENDS = ["sqlite", "psycopg"]
CI_SUITES: dict[str, list[str]] = {
    "engine": [
        "test/engine/test_reconnect.py",
        "test/engine/test_transaction.py",
    ],
    "orm": ["test/orm/test_transaction.py"],
}

#: Tests that read QueuePool's private state, by test function name, and why
#: they cannot pass on another pool class. A difference in one of these is
#: expected; any other difference fails the judge.
BOUND_TO_QUEUEPOOL: dict[str, str] = {
    "test_dialect_initialize_retry_if_exception": (
        "asserts on engine.pool._pool, QueuePool's private queue of idle "
        "connections (sqlgate's figure for it is engine.pool.checkedin())"
    ),
    "test_pool_class": (
        "asserts engine.pool.__class__ is QueuePool for file URLs, i.e. which "
        "class the SQLite dialect picks: the class swapped in here by design "
        "(its SingletonThreadPool cases, untouched, pass on both)"
    ),
}

SIMPLE_INDEX = "https://pypi.org/simple"


# -- the sdist -------------------------------------------------------------------


def cache_dir(given: str | None) -> Path:
    """Where the sdist is kept: outside the repository unless told otherwise."""
    if given:
        return Path(given).resolve()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sqlgate" / "sqlalchemy-sdist"


def fetch_sdist(version: str, cache: Path) -> Path:
    """Download SQLAlchemy's sdist for ``version`` from PyPI once; return it.

    PyPI's simple index (the JSON form, PEP 691) gives the file's URL and
    sha256, which is checked. ``pip download`` is the fallback; it is not the
    first choice because it builds the package's metadata, which means
    installing Cython into a build environment (about 40 s; from source,
    with ``--no-binary :all:``, far longer).
    """
    cache.mkdir(parents=True, exist_ok=True)
    name = f"sqlalchemy-{version}.tar.gz"
    target = cache / name
    if target.exists():
        return target
    index = os.environ.get("PIP_INDEX_URL", SIMPLE_INDEX).rstrip("/")
    try:
        request = urllib.request.Request(
            f"{index}/sqlalchemy/",
            headers={"Accept": "application/vnd.pypi.simple.v1+json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            files = json.load(response)["files"]
        (entry,) = [f for f in files if f["filename"].lower() == name]
        with urllib.request.urlopen(entry["url"], timeout=300) as response:
            data = response.read()
        digest = hashlib.sha256(data).hexdigest()
        if digest != entry["hashes"]["sha256"]:
            raise RuntimeError(f"{name}: sha256 {digest} does not match the index")
        partial = target.with_suffix(".part")
        partial.write_bytes(data)
        partial.rename(target)
    except Exception as exc:
        print(f"simple index download failed ({exc!r}); trying pip download")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--no-binary",
                "SQLAlchemy",
                f"SQLAlchemy=={version}",
                "-d",
                str(cache),
            ],
            check=True,
        )
    return target


def unpack(sdist: Path, version: str) -> Path:
    """Unpack the sdist next to it (once); return its root."""
    root = sdist.parent / f"sqlalchemy-{version}"
    done = root / ".unpacked"
    if not done.exists():
        with tarfile.open(sdist) as tar:
            tar.extractall(sdist.parent, filter="data")
        done.touch()
    return root


# -- the servers -----------------------------------------------------------------


def prepare(backend: str) -> str | None:
    """Create the database and schemas the suite expects; None, or why not."""
    try:
        if backend in ("psycopg", "asyncpg"):
            import psycopg

            dsn = "host=127.0.0.1 port=5432 user=postgres connect_timeout=5"
            with psycopg.connect(f"{dsn} dbname=postgres", autocommit=True) as c:
                if not c.execute(
                    "select 1 from pg_database where datname = %s", (DB,)
                ).fetchone():
                    c.execute(f"create database {DB}")
            with psycopg.connect(f"{dsn} dbname={DB}", autocommit=True) as c:
                for schema in ("test_schema", "test_schema_2"):
                    c.execute(f"create schema if not exists {schema}")
        elif backend == "pymysql":
            import pymysql

            conn = pymysql.connect(
                host="127.0.0.1", port=3306, user="root", connect_timeout=5
            )
            try:
                with conn.cursor() as cur:
                    for db in (DB, "test_schema", "test_schema_2"):
                        cur.execute(
                            f"create database if not exists {db} character set utf8mb4"
                        )
            finally:
                conn.close()
    except Exception as exc:
        return repr(exc)
    return None


# -- running and reading ---------------------------------------------------------


@dataclass
class Run:
    """The outcomes of one pytest run: node id -> passed / failed / skipped."""

    outcomes: dict[str, str] = field(default_factory=dict)
    switched: str = ""
    seconds: float = 0.0


def run_pytest(root: Path, url: str, paths: list[str], sqlgate: bool, out: Path) -> Run:
    """Run ``paths`` of the suite in ``root`` on ``url``; read its JUnit XML."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(PLUGIN_DIR), *filter(None, [env.get("PYTHONPATH")])]
    )
    # Python -s: the suite's conftest puts the sdist's lib/ on sys.path
    # unless user site-packages are off; the installed SQLAlchemy is judged.
    cmd = [
        sys.executable,
        "-s",
        "-m",
        "pytest",
        *paths,
        "--dburi",
        url,
        "-p",
        "no:cacheprovider",
        "-q",
        "--tb=short",
        "--maxfail=100000",
        f"--junitxml={out}",
    ]
    if sqlgate:
        cmd += ["-p", "sqlgate_pools"]
    if not url.startswith("sqlite://"):
        # As SQLAlchemy's own CI does on every backend but its default: the
        # tests that run per backend; the rest is SQL compilation and Python.
        cmd.append("--backend-only")
    started = time.monotonic()
    proc = subprocess.run(
        cmd, cwd=root, env=env, capture_output=True, text=True, check=False
    )
    run = Run(seconds=time.monotonic() - started)
    (out.with_suffix(".log")).write_text(proc.stdout + proc.stderr)
    match = re.search(r"sqlgate-pools: switched (.*)", proc.stdout)
    run.switched = match.group(1) if match else ""
    if not out.exists():
        log = out.with_suffix(".log")
        raise RuntimeError(f"pytest wrote no report (exit {proc.returncode}); {log}")
    for case in ET.parse(out).getroot().iter("testcase"):
        node = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag for child in case}
        if kinds & {"failure", "error"}:
            outcome = "failed"
        elif "skipped" in kinds:
            outcome = "skipped"
        else:
            outcome = "passed"
        # A teardown error is reported as a second testcase of the same name.
        if run.outcomes.get(node) != "failed":
            run.outcomes[node] = outcome
    return run


def suite_of(node: str, suites: dict[str, list[str]]) -> str:
    """Which of ``suites`` a JUnit test name belongs to."""
    path = node.split("::", 1)[0].replace(".", "/")
    for suite, paths in suites.items():
        for p in paths:
            if path.startswith(p.removesuffix(".py")):
                return suite
    return "?"


def counts(outcomes: dict[str, str]) -> str:
    """``passed/failed/skipped`` counts."""
    p = sum(1 for o in outcomes.values() if o == "passed")
    f = sum(1 for o in outcomes.values() if o == "failed")
    s = sum(1 for o in outcomes.values() if o == "skipped")
    return f"{p}/{f}/{s}"


#: The backend SQLAlchemy's plugin appends to a ``__backend__`` class's name
#: when it makes the class's per-backend copy (``Class_sqlite+pysqlite_3_40_1``:
#: ``_`` and the config name, dialect+driver and server version, with ``.``,
#: ``[``, ``]`` and ``_`` runs made one ``_``). Those copies exist only after
#: collection, so a node id must name the class they are made from.
BACKEND_SUFFIX = re.compile(r"_[A-Za-z0-9]+\+[A-Za-z0-9_]+$")


def junit_to_node(root: Path, junit: str) -> str:
    """A JUnit name (``test.engine.test_x.Class::name``) as a pytest node id.

    A per-backend class copy is named by the class it is made from, which
    pytest can collect; SQLAlchemy's plugin then makes the copy again, so
    the rerun's JUnit name is the one given here.
    """
    classname, name = junit.split("::", 1)
    parts = classname.split(".")
    for cut in range(len(parts), 0, -1):
        candidate = Path(*parts[:cut]).with_suffix(".py")
        if (root / candidate).exists():
            rest = [BACKEND_SUFFIX.sub("", p) for p in parts[cut:]]
            return "::".join([candidate.as_posix(), *rest, name])
    return junit


def function_of(junit: str) -> str:
    """The test function a JUnit name runs, without its parameters.

    Parameters go first: they may hold ``::`` (``file::memory:`` URLs).
    """
    return re.sub(r"\[.*\]$", "", junit).rsplit("::", 1)[1]


def main(argv: list[str] | None = None) -> int:
    """Run the judge; see the module docstring for the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", action="append", choices=sorted(BACKENDS))
    parser.add_argument("--suite", action="append", choices=sorted(SUITES))
    parser.add_argument("--ci", action="store_true", help="run the CI slice only")
    parser.add_argument("--cache", help="where to keep the sdist")
    parser.add_argument(
        "--out", help="where to write reports (default: <cache>/runs/<time>)"
    )
    parser.add_argument(
        "--markdown", help="also write the table and differences to this file"
    )
    args = parser.parse_args(argv)

    suites = CI_SUITES if args.ci else SUITES
    backends = args.backend or (CI_BACKENDS if args.ci else list(BACKENDS))
    if args.suite:
        suites = {s: suites.get(s, SUITES[s]) for s in args.suite}

    version = metadata.version("SQLAlchemy")
    cache = cache_dir(args.cache)
    root = unpack(fetch_sdist(version, cache), version)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else cache / "runs" / stamp
    out.mkdir(parents=True, exist_ok=True)
    print(f"SQLAlchemy {version}: {root}; reports in {out}", flush=True)

    table: list[tuple[str, str, str, str, int]] = []
    differences: list[tuple[str, str, str, str, str]] = []
    status = 0
    for backend in backends:
        problem = prepare(backend)
        if problem is not None:
            print(f"{backend}: server unreachable: {problem}", flush=True)
            status = 2
            continue
        url = BACKENDS[backend].format(out=out.resolve())
        chosen = {
            suite: [p.format(dialect=DIALECT_DIRS[backend]) for p in ps]
            for suite, ps in suites.items()
        }
        paths = [p for ps in chosen.values() for p in ps]
        runs: dict[bool, Run] = {}
        for sqlgate in (False, True):
            label = "sqlgate" if sqlgate else "queuepool"
            runs[sqlgate] = run = run_pytest(
                root, url, paths, sqlgate, out / f"{backend}-{label}.xml"
            )
            print(
                f"{backend} {label}: {counts(run.outcomes)} pass/fail/skip "
                f"in {run.seconds:.0f} s {run.switched}",
                flush=True,
            )
        if not re.search(r"=[1-9]", runs[True].switched):
            print(f"{backend}: the sqlgate run switched no engine", flush=True)
            status = 2
        qp, sg = runs[False].outcomes, runs[True].outcomes
        differ = sorted(n for n in qp.keys() | sg.keys() if qp.get(n) != sg.get(n))
        if differ:
            # Once more, on their own, on both pools: keep what still differs.
            nodes = [junit_to_node(root, n) for n in differ]
            again = {
                s: run_pytest(
                    root,
                    url,
                    list(dict.fromkeys(nodes)),
                    s,
                    out / f"{backend}-rerun-{int(s)}.xml",
                ).outcomes
                for s in (False, True)
            }
            for n, node in zip(differ, nodes, strict=True):
                a, b = again[False].get(n), again[True].get(n)
                if a == b and a is not None:
                    print(f"  {node}: differed once, same on a rerun ({a})")
                    qp[n] = sg[n] = a
                    continue
                why = BOUND_TO_QUEUEPOOL.get(function_of(n), "")
                differences.append((backend, node, qp.get(n, "-"), sg.get(n, "-"), why))
                if not why:
                    status = max(status, 1)
        for suite in chosen:
            q = {n: o for n, o in qp.items() if suite_of(n, chosen) == suite}
            s = {n: o for n, o in sg.items() if suite_of(n, chosen) == suite}
            diff = sum(1 for n in q.keys() | s.keys() if q.get(n) != s.get(n))
            table.append((suite, backend, counts(q), counts(s), diff))

    lines = [
        f"SQLAlchemy {version} test suite, pass/fail/skip:",
        "",
        "| suite | backend | QueuePool | sqlgate | differ |",
        "|---|---|---|---|---|",
        *(f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in table),
        "",
    ]
    if differences:
        lines += [
            "Differences (backend, test, QueuePool -> sqlgate, why):",
            "",
            *(
                f"- {b} {n}: {q} -> {s}" + (f" (bound to QueuePool: {w})" if w else "")
                for b, n, q, s, w in differences
            ),
        ]
    else:
        lines.append("No differences.")
    report = "\n".join(lines)
    print(report)
    if args.markdown:
        Path(args.markdown).write_text(report + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
