"""The DSN parser: a target string into its parts, pure; and the one mask.

Accepted forms::

    sqlite:///relative/path.db          a file relative to the working directory
    sqlite:////absolute/path.db         an absolute path (four slashes)
    sqlite:///:memory:                  one in-memory database shared by the pool
    postgresql://user:pw@host:5432/db?application_name=x     (also postgres://)
    postgresql+psycopg://...            the same, naming the driver
    postgresql+asyncpg://...            asyncpg (open_async only)
    mysql://user:pw@host:3306/db        PyMySQL (also mariadb://, mysql+pymysql://)
    postgresql+pg8000://...             pg8000, through the generic DB-API adapter
    postgresql+psycopg2://...           psycopg2, through the generic DB-API adapter
    mysql+mysqlconnector://...          mysql-connector-python, through the generic
                                        DB-API adapter (also mariadb+mysqlconnector://)
    host=h port=5432 user=u password=pw dbname=db    libpq key=value (psycopg)

User, password, database and query values are percent-decoded (``%40`` is
``@``; ``+`` stays ``+``, as libpq reads it). A password may also be given as
``?password=...`` (or ``password=`` in the key=value form), but only once.

Where the user information ends: at the first ``@`` after ``user:``. So a
password may hold ``/ ? # :`` as they are (generated secrets often do), while
an ``@`` or a ``%`` in it must be written ``%40`` / ``%25``. A target with no
user information but a port and an ``@`` further on (``h:5432/d?x=a@b``) reads
as user ``h``: write that ``@`` as ``%40``.

Query parameters go to the driver; each adapter lists the ones it knows.

Secrets (the password, and the values of ``SECRET_PARAMS``) are shown only
through ``redact``: every repr, log line, error, metric label and CLI output
that names a target goes through it (``DSN.redacted()`` is ``redact`` of the
parsed parts). ``secrets_of`` gives the strings to scrub from a driver's error.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "DEFAULT_PORTS",
    "DSN",
    "SCHEMES",
    "SECRET_PARAMS",
    "parse",
    "redact",
    "secrets_of",
    "with_quoted",
]

#: Scheme -> driver family. The family picks the adapter module.
SCHEMES = {
    "sqlite": "sqlite",
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "postgresql+psycopg": "postgresql",
    "postgresql+asyncpg": "asyncpg",
    "mysql": "mysql",
    "mariadb": "mysql",
    "mysql+pymysql": "mysql",
    "mariadb+pymysql": "mysql",
    # Drivers served by the generic DB-API adapter (drivers/dbapi.py).
    "postgresql+pg8000": "pg8000",
    "postgresql+psycopg2": "psycopg2",
    "mysql+mysqlconnector": "mysqlconnector",
    "mariadb+mysqlconnector": "mysqlconnector",
}

#: Driver family -> the port its driver dials when the DSN names none.
DEFAULT_PORTS = {
    "postgresql": 5432,
    "asyncpg": 5432,
    "mysql": 3306,
    "pg8000": 5432,
    "psycopg2": 5432,
    "mysqlconnector": 3306,
}

#: Parameter names (lower case) whose values are never shown.
SECRET_PARAMS = frozenset({"password", "passwd", "sslpassword"})

#: What ``redact`` puts in place of a secret.
MASK = "***"

#: A URL-style target, split leniently: the password runs to the first ``@``
#: (so it may hold ``/ ? # :``); the user holds none of ``: @ / ? #``.
_URL = re.compile(
    r"""
    (?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://
    (?:(?P<user>[^:@/?\#]*)(?P<colon>:(?P<password>[^@]*))?@)?
    (?P<host>\[[^\]/?\#@]*\]|[^:/?\#@\[\]]*)
    (?::(?P<port>[^/?\#@]*))?
    (?P<path>/[^?\#]*)?
    (?:\?(?P<query>[^\#]*))?
    (?:\#(?P<fragment>.*))?
    """,
    re.VERBOSE | re.DOTALL,
)

#: One ``key=value`` of a libpq connection string (the value quoted or bare,
#: with backslash escapes).
_KEYWORD = re.compile(
    r"""\s*(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*=\s*
    (?:'(?P<quoted>(?:[^'\\]|\\.)*)'|(?P<bare>(?:[^\s'\\]|\\.)+))""",
    re.VERBOSE | re.DOTALL,
)

#: libpq keywords that are parts of the DSN (the others become parameters).
_LIBPQ_PARTS = {"host", "port", "user", "password", "dbname"}


@dataclass(frozen=True)
class DSN:
    """A parsed target.

    Attributes:
        scheme: as written, lower-cased ("postgres", "mariadb", ...);
            "postgresql" for a libpq key=value string.
        family: the driver family: "sqlite", "postgresql", "asyncpg", "mysql",
            or one the generic DB-API adapter serves: "pg8000", "psycopg2",
            "mysqlconnector".
        user: the user name, or None.
        password: the password, or None; never shown in ``repr``.
        host: the host name, or None.
        port: the port, or None.
        database: the database name (for sqlite: the file path, or ":memory:").
        params: the query parameters, in order, as strings (a ``password``
            parameter is moved to ``password``).
    """

    scheme: str
    family: str
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    host: str | None = None
    port: int | None = None
    database: str = ""
    params: dict[str, str] = field(default_factory=dict)

    def redacted(self) -> str:
        """The DSN as a string, safe to log: the password replaced by ``***``.

        The user name, host, port, database and query parameters are kept as
        parsed (decoded, not re-quoted), except the values of
        ``SECRET_PARAMS``, which are masked; an IPv6 host is put back in
        brackets. A sqlite DSN is ``scheme:///path`` plus its parameters.

        Returns:
            ``scheme://user:***@host:port/database?k=v`` (parts the DSN lacks
            left out).
        """
        if self.family == "sqlite":
            return f"{self.scheme}:///{self.database}" + _query(self.params.items())
        auth = ""
        if self.user is not None:
            auth = self.user
            if self.password is not None:
                auth += ":" + MASK
            auth += "@"
        host = self.host or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.scheme}://{auth}{host}{port}/{self.database}" + _query(
            self.params.items()
        )

    def secrets(self) -> tuple[str, ...]:
        """Every secret this DSN holds, for ``scrub``: as given and URL-quoted.

        Returns:
            The password and the values of ``SECRET_PARAMS``, each also in its
            percent-encoded forms; empty strings left out.
        """
        found = [self.password or ""]
        found += [v for k, v in self.params.items() if k.lower() in SECRET_PARAMS]
        return with_quoted(found)

    def pool_name(self) -> str:
        """A name for the pool: where it connects, never who or with what.

        Follows OpenTelemetry's ``db.client.connection.pool.name``
        (``server.address:server.port/db.namespace``). No user name, password
        or parameter is part of it, so it is safe as a metric label.

        Returns:
            ``host:port/database`` for a server, with the driver's defaults
            filled in (``localhost``; 5432 for postgresql and asyncpg, 3306
            for mysql) and an IPv6 host in brackets; ``sqlite:<absolute
            path>`` (resolved against the working directory now) or
            ``sqlite::memory:``.
        """
        if self.family == "sqlite":
            if self.database == ":memory:":
                return "sqlite::memory:"
            return "sqlite:" + os.path.abspath(self.database)
        host = self.host or "localhost"
        if ":" in host:
            host = f"[{host}]"
        port = self.port if self.port is not None else DEFAULT_PORTS[self.family]
        return f"{host}:{port}/{self.database}"

    def __repr__(self) -> str:
        return f"DSN({self.redacted()!r})"


def _query(items: Iterable[tuple[str, str]]) -> str:
    """``?k=v&...`` with the values of ``SECRET_PARAMS`` masked ("" if none)."""
    pairs = [f"{k}={MASK if k.lower() in SECRET_PARAMS else v}" for k, v in items]
    return "?" + "&".join(pairs) if pairs else ""


def with_quoted(words: Iterable[str]) -> tuple[str, ...]:
    """``words`` and their percent-encoded spellings, longest first, no blanks."""
    out: set[str] = set()
    for w in words:
        if w:
            out.update((w, quote(w, safe=""), quote(w), quote(w, safe="/:")))
    return tuple(sorted(out, key=len, reverse=True))


def redact(target: object) -> str:
    """Show a target with every secret masked, whether it parses or not.

    The one function through which sqlgate shows a target it was given (in
    reprs, errors, logs and the CLI). A URL's password and secret parameters
    (``SECRET_PARAMS``) become ``***``; a libpq key=value string keeps its
    keywords and masks those values; text that is neither is shown only if it
    holds no ``@``, ``=`` or ``:``, else as ``***``.

    Args:
        target: what the caller passed as a target (any object).

    Returns:
        A string safe to show.
    """
    if target is None or isinstance(target, int | float):
        return repr(target)
    if not isinstance(target, str):
        return f"<{type(target).__name__} object>"
    m = _URL.fullmatch(target)
    if m is not None:
        auth = ""
        if m["user"] is not None:
            auth = m["user"] + (":" + MASK if m["colon"] else "") + "@"
        port = f":{m['port']}" if m["port"] is not None else ""
        query = ""
        if m["query"] is not None:
            query = "?" + "&".join(map(_mask_pair, m["query"].split("&")))
        fragment = "#" + MASK if m["fragment"] is not None else ""
        path = m["path"] or ""
        return f"{m['scheme']}://{auth}{m['host']}{port}{path}{query}{fragment}"
    scheme, sep, _ = target.partition("://")
    if sep:
        return f"{scheme}://{MASK}" if _URL.fullmatch(scheme + "://") else MASK
    pairs = _keywords(target)
    if pairs is not None:
        return " ".join(
            f"{k}={MASK if k.lower() in SECRET_PARAMS else _quote_value(v)}"
            for k, v in pairs
        )
    return target if not any(c in target for c in "@=:") else MASK


def _mask_pair(pair: str) -> str:
    """One raw ``k=v`` of a query, its value masked if ``k`` names a secret."""
    key, eq, _ = pair.partition("=")
    return f"{key}={MASK}" if eq and unquote(key).lower() in SECRET_PARAMS else pair


def secrets_of(target: object) -> tuple[str, ...]:
    """The secrets a target string holds, for scrubbing, even if it is invalid.

    Args:
        target: a target string (anything else holds none).

    Returns:
        As ``DSN.secrets``; for a target that does not parse, what the
        lenient split finds in the password and secret parameters.
    """
    if not isinstance(target, str):
        return ()
    try:
        return parse(target).secrets()
    except (TypeError, ValueError):
        pass
    found: list[str] = []
    m = _URL.fullmatch(target)
    if m is not None:
        found.append(m["password"] or "")
        found.append(unquote(m["password"] or ""))
        for p in (m["query"] or "").split("&"):
            k, _, v = p.partition("=")
            if unquote(k).lower() in SECRET_PARAMS:
                found += (v, unquote(v))
    pairs = _keywords(target)
    if pairs is not None:
        found += [v for k, v in pairs if k.lower() in SECRET_PARAMS]
    return with_quoted(found)


def parse(target: str) -> DSN:
    """Parse a target string.

    Args:
        target: a DSN in one of the forms above.

    Returns:
        The parsed DSN.

    Raises:
        TypeError: ``target`` is not a string.
        ValueError: unknown scheme, malformed URL, bad port, empty database
            path, a password given twice; the message names the problem and
            shows the target through ``redact``.
    """
    if not isinstance(target, str):
        raise TypeError(
            f"target must be a DSN string or a callable, got {redact(target)}"
        )
    scheme, sep, _ = target.partition("://")
    if not sep:
        pairs = _keywords(target)
        if pairs is not None:
            return _parse_keywords(target, pairs)
        raise ValueError(
            f"target must look like scheme://..., got {redact(target)!r} "
            f"(schemes: {', '.join(SCHEMES)}; or a libpq key=value string)"
        )
    scheme = scheme.lower()
    family = SCHEMES.get(scheme)
    if family is None:
        raise ValueError(
            f"unknown scheme {scheme!r} in target {redact(target)!r} "
            f"(known: {', '.join(SCHEMES)})"
        )
    m = _URL.fullmatch(target)
    if m is None:
        raise ValueError(
            f"malformed target {redact(target)!r} (an '@' or '%' in a password "
            "must be written %40 / %25)"
        )
    params = _params(target, m["query"])
    if m["fragment"] is not None:
        raise ValueError(f"target {redact(target)!r} has a '#' fragment")
    if family == "sqlite":
        return _parse_sqlite(scheme, target, m, params)
    port = _port(target, m["port"])
    path = m["path"] or ""
    database = unquote(path[1:])
    if "/" in database:
        raise ValueError(f"bad database name {database!r} in target {redact(target)!r}")
    host = m["host"]
    if host.startswith("["):
        host = host[1:-1]
    password = _one_password(
        target, unquote(m["password"]) if m["colon"] else None, params
    )
    return DSN(
        scheme=scheme,
        family=family,
        user=unquote(m["user"]) if m["user"] is not None else None,
        password=password,
        host=unquote(host).lower() or None,
        port=port,
        database=database,
        params=params,
    )


def _params(target: str, query: str | None) -> dict[str, str]:
    """Decode a query string (``+`` stays ``+``, as libpq reads it).

    Raises:
        ValueError: an empty name or a pair without ``=``; target redacted.
    """
    params: dict[str, str] = {}
    if not query:
        return params
    for pair in query.split("&"):
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise ValueError(f"malformed query string in target {redact(target)!r}")
        key = unquote(key)
        if key.lower() == "password" and any(k.lower() == key.lower() for k in params):
            raise ValueError(f"target {redact(target)!r} gives the password twice")
        params[key] = unquote(value)
    return params


def _port(target: str, text: str | None) -> int | None:
    if text is None or text == "":
        return None
    if not text.isascii() or not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"bad port in target {redact(target)!r}: expected 1-65535")
    return int(text)


def _one_password(target: str, given: str | None, params: dict[str, str]) -> str | None:
    """The password, from the user information or ``password=`` (not both).

    The parameter is taken out of ``params``: every adapter reads the password
    from ``DSN.password``, and nothing shows parameters unmasked twice over.
    """
    keys = [k for k in params if k.lower() == "password"]
    if not keys:
        return given
    if given is not None or len(keys) > 1:
        raise ValueError(f"target {redact(target)!r} gives the password twice")
    return params.pop(keys[0])


def _parse_sqlite(
    scheme: str, target: str, m: re.Match[str], params: dict[str, str]
) -> DSN:
    if m["user"] is not None or m["host"] or m["port"] is not None:
        raise ValueError(
            f"a sqlite target takes no host or user, got {redact(target)!r} "
            "(use sqlite:///relative.db or sqlite:////absolute/path.db)"
        )
    if any(k.lower() in SECRET_PARAMS for k in params):
        raise ValueError(f"a sqlite target takes no password, got {redact(target)!r}")
    path = m["path"] or ""
    database = unquote(path[1:])
    if not database or database.endswith("/"):
        raise ValueError(
            f"a sqlite target needs a file path, got {redact(target)!r} "
            "(use sqlite:///relative.db, sqlite:////absolute/path.db or "
            "sqlite:///:memory:)"
        )
    return DSN(scheme=scheme, family="sqlite", database=database, params=params)


def _keywords(text: str) -> list[tuple[str, str]] | None:
    """Split a libpq ``key=value`` string; None if it is not one."""
    pairs: list[tuple[str, str]] = []
    at = 0
    while at < len(text):
        if text[at:].strip() == "":
            break
        m = _KEYWORD.match(text, at)
        if m is None or (m.end() < len(text) and not text[m.end()].isspace()):
            return None
        raw = m["quoted"] if m["quoted"] is not None else m["bare"]
        pairs.append((m["key"], re.sub(r"\\(.)", r"\1", raw, flags=re.DOTALL)))
        at = m.end()
    return pairs or None


def _quote_value(value: str) -> str:
    if value and not any(c.isspace() or c in "'\\" for c in value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _parse_keywords(target: str, pairs: list[tuple[str, str]]) -> DSN:
    """A libpq key=value string as a ``postgresql`` DSN (psycopg's family)."""
    parts: dict[str, str] = {}
    params: dict[str, str] = {}
    for key, value in pairs:
        if key in _LIBPQ_PARTS:
            parts[key] = value
        else:
            params[key] = value
    port = _port(target, parts.get("port"))
    return DSN(
        scheme="postgresql",
        family="postgresql",
        user=parts.get("user"),
        password=_one_password(target, parts.get("password"), params),
        host=parts.get("host") or None,
        port=port,
        database=parts.get("dbname", ""),
        params=params,
    )
