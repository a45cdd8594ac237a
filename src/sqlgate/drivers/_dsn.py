"""The DSN parser: a URL-style target string into its parts, pure.

Accepted forms::

    sqlite:///relative/path.db          a file relative to the working directory
    sqlite:////absolute/path.db         an absolute path (four slashes)
    sqlite:///:memory:                  one in-memory database shared by the pool
    postgresql://user:pw@host:5432/db?application_name=x     (also postgres://)
    postgresql+psycopg://...            the same, naming the driver
    postgresql+asyncpg://...            asyncpg (open_async only)
    mysql://user:pw@host:3306/db        PyMySQL (also mariadb://, mysql+pymysql://)

User and password are percent-decoded (a ``@`` in a password is ``%40``).
Query parameters go to the driver; each adapter lists the ones it knows. The
password never appears in ``repr``, ``redacted()`` or any error raised here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = ["DEFAULT_PORTS", "DSN", "SCHEMES", "parse"]

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
}

#: Driver family -> the port its driver dials when the DSN names none.
DEFAULT_PORTS = {"postgresql": 5432, "asyncpg": 5432, "mysql": 3306}


@dataclass(frozen=True)
class DSN:
    """A parsed target.

    Attributes:
        scheme: as written, lower-cased ("postgres", "mariadb", ...).
        family: the driver family: "sqlite", "postgresql", "asyncpg", "mysql".
        user: the user name, or None.
        password: the password, or None; never shown in ``repr``.
        host: the host name, or None.
        port: the port, or None.
        database: the database name (for sqlite: the file path, or ":memory:").
        params: the query parameters, in order, as strings.
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
        parsed (decoded, not re-quoted); an IPv6 host is put back in brackets.
        A sqlite DSN is ``scheme:///path`` plus its parameters.

        Returns:
            ``scheme://user:***@host:port/database?k=v`` (parts the DSN lacks
            left out).
        """
        if self.family == "sqlite":
            return f"{self.scheme}:///{self.database}" + self._query()
        auth = ""
        if self.user is not None:
            auth = self.user
            if self.password is not None:
                auth += ":***"
            auth += "@"
        host = self.host or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.scheme}://{auth}{host}{port}/{self.database}" + self._query()

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

    def _query(self) -> str:
        if not self.params:
            return ""
        return "?" + "&".join(f"{k}={v}" for k, v in self.params.items())

    def __repr__(self) -> str:
        return f"DSN({self.redacted()!r})"


def parse(target: str) -> DSN:
    """Parse a target string.

    Args:
        target: a DSN in one of the forms above.

    Returns:
        The parsed DSN.

    Raises:
        TypeError: ``target`` is not a string.
        ValueError: unknown scheme, malformed URL, bad port, empty database
            path; the message names the problem and shows the target with its
            password masked.
    """
    if not isinstance(target, str):
        raise TypeError(f"target must be a DSN string or a callable, got {target!r}")
    scheme, sep, _ = target.partition("://")
    if not sep:
        raise ValueError(
            f"target must look like scheme://..., got {_mask_raw(target)!r} "
            f"(schemes: {', '.join(SCHEMES)})"
        )
    scheme = scheme.lower()
    family = SCHEMES.get(scheme)
    if family is None:
        raise ValueError(
            f"unknown scheme {scheme!r} in target {_mask_raw(target)!r} "
            f"(known: {', '.join(SCHEMES)})"
        )
    try:
        parts = urlsplit(target)
    except ValueError as exc:
        raise ValueError(f"malformed target {_mask_raw(target)!r}: {exc}") from None
    try:
        params = dict(
            parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True)
        )
    except ValueError:
        params = {"": ""} if parts.query else {}
    if "" in params:
        raise ValueError(f"malformed query string in target {_mask_raw(target)!r}")
    if parts.fragment:
        raise ValueError(f"target {_mask_raw(target)!r} has a '#' fragment")
    if family == "sqlite":
        return _parse_sqlite(scheme, target, parts.netloc, parts.path, params)

    try:
        port = parts.port
    except ValueError:
        raise ValueError(
            f"bad port in target {_mask_raw(target)!r}: expected 1-65535"
        ) from None
    if port == 0:
        raise ValueError(f"bad port in target {_mask_raw(target)!r}: expected 1-65535")
    database = unquote(parts.path[1:]) if parts.path.startswith("/") else ""
    if "/" in database:
        raise ValueError(
            f"bad database name {database!r} in target {_mask_raw(target)!r}"
        )
    return DSN(
        scheme=scheme,
        family=family,
        user=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
        host=parts.hostname or None,
        port=port,
        database=database,
        params=params,
    )


def _parse_sqlite(
    scheme: str, target: str, netloc: str, path: str, params: dict[str, str]
) -> DSN:
    if netloc:
        raise ValueError(
            f"a sqlite target takes no host, got {netloc!r} in {_mask_raw(target)!r} "
            "(use sqlite:///relative.db or sqlite:////absolute/path.db)"
        )
    database = unquote(path[1:]) if path.startswith("/") else ""
    if not database or database.endswith("/"):
        raise ValueError(
            f"a sqlite target needs a file path, got {target!r} "
            "(use sqlite:///relative.db, sqlite:////absolute/path.db or "
            "sqlite:///:memory:)"
        )
    return DSN(scheme=scheme, family="sqlite", database=database, params=params)


def _mask_raw(target: str) -> str:
    """Mask the password of a target string that may not parse."""
    scheme, sep, rest = target.partition("://")
    if not sep:
        return target if "@" not in target else "***"
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    if at and ":" in userinfo:
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{hostport}"
    return f"{scheme}://{netloc}{slash}{tail}"
