"""Database addresses: parsed once into a frozen ``Dsn``, redacted whenever shown."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from vigie.errors import DsnError

Engine = Literal["sqlite", "postgresql", "mysql"]

_SCHEMES: dict[str, Engine] = {
    "sqlite": "sqlite",
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
}
_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306}
EXAMPLES = (
    "sqlite:///path/to/production.db, "
    "postgresql://user@127.0.0.1:5432/dbname, "
    "mysql://root@127.0.0.1:3306/dbname"
)


@dataclass(frozen=True)
class Dsn:
    """A parsed database address. ``password`` never appears in ``str()``."""

    engine: Engine
    database: str
    host: str = ""
    port: int = 0
    user: str = ""
    password: str = ""

    @property
    def path(self) -> Path:
        """The file of a SQLite database."""
        return Path(self.database)

    def __str__(self) -> str:
        return self.redacted()

    def __repr__(self) -> str:
        return f"Dsn({self.redacted()!r})"

    def redacted(self) -> str:
        """The DSN as text with any password replaced by ``***``."""
        if self.engine == "sqlite":
            return f"sqlite:///{self.database}"
        auth = self.user + (":***" if self.password else "")
        auth = f"{auth}@" if auth else ""
        return f"{self.engine}://{auth}{self.host}:{self.port}/{self.database}"

    def libpq(self, **extra: str) -> str:
        """A libpq connection string (PostgreSQL only); holds the password. Every value is
        single-quoted with its backslashes and quotes escaped (libpq's rule), so a password
        with a space or a quote stays one value. Built here rather than by psycopg's
        ``make_conninfo``, whose import costs a cold ``vigie sync`` 50 ms."""

        def value(text: str) -> str:
            return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"

        params = {"host": self.host, "port": str(self.port), "dbname": self.database}
        if self.user:
            params["user"] = self.user
        if self.password:
            params["password"] = self.password
        return " ".join(f"{k}={value(v)}" for k, v in {**params, **extra}.items())

    def mysql_attach(self) -> str:
        """The DuckDB MySQL extension's connection string: each value double-quoted, with
        its backslashes and double quotes escaped (the extension's own syntax)."""

        def value(text: str) -> str:
            return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

        params = {"host": self.host, "port": str(self.port), "user": self.user or "root",
                  "database": self.database}  # fmt: skip
        if self.password:
            params["password"] = self.password
        return " ".join(f"{k}={value(v)}" for k, v in params.items())

    def with_database(self, database: str) -> Dsn:
        """The same server, another database."""
        return Dsn(self.engine, database, self.host, self.port, self.user, self.password)


def parse_dsn(text: str) -> Dsn:
    """Parse ``text`` into a ``Dsn`` or raise ``DsnError`` naming the valid forms."""
    scheme, sep, _ = text.partition("://")
    if not sep:
        raise DsnError(f"'{_shown(text)}' is not a DSN.", hint=f"Use one of: {EXAMPLES}")
    engine = _SCHEMES.get(scheme.lower())
    if engine is None:
        raise DsnError(
            f"Unknown database engine '{scheme}' in DSN '{_shown(text)}'.",
            hint=f"Supported: sqlite, postgresql, mysql (mariadb). Examples: {EXAMPLES}",
        )
    if engine == "sqlite":
        return _parse_sqlite(text)
    try:
        parts = urlsplit(text)
        host = parts.hostname
    except ValueError as exc:
        raise DsnError(f"DSN '{_shown(text)}' is not a valid URL: {exc}.",
                       hint=f"Examples: {EXAMPLES}") from None  # fmt: skip
    database = unquote(parts.path.lstrip("/"))
    if "\x00" in text or "\x00" in unquote(text) or "/" in database:
        raise DsnError(f"DSN '{_shown(text)}' names no single database (a NUL or a '/' "
                       "in its path).", hint=f"Examples: {EXAMPLES}")  # fmt: skip
    if not database:
        raise DsnError(f"DSN '{_shown(text)}' names no database.", hint=f"Examples: {EXAMPLES}")
    try:
        port = parts.port or _DEFAULT_PORTS[engine]
    except ValueError as exc:
        raise DsnError(f"DSN '{_shown(text)}' has an invalid port: {exc}.") from None
    return Dsn(
        engine=engine,
        database=database,
        host=host or "127.0.0.1",
        port=port,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
    )


def _parse_sqlite(text: str) -> Dsn:
    path = text.split("://", 1)[1]
    if path.startswith("/"):
        path = path[1:]  # sqlite:///rel.db -> rel.db ; sqlite:////abs.db -> /abs.db
    if not path:
        raise DsnError("SQLite DSN names no file.", hint="Example: sqlite:///demo/production.db")
    return Dsn(engine="sqlite", database=path)


def _shown(text: str) -> str:
    """``text`` with any password blanked, for error messages."""
    scheme, sep, rest = text.partition("://")
    auth, at, tail = rest.rpartition("@")
    if not sep or not at or ":" not in auth:
        return text
    return f"{scheme}://{auth.split(':', 1)[0]}:***@{tail}"  # no URL parsing: it may fail
