"""The analytics store: one DuckDB file, encrypted at rest, 0600 in a 0700 folder.

Layout:
- one table per synced production table, with the copied (masked) columns, plus
  ``_vigie_bucket`` (the row's key range, for delete reconciliation), ``_vigie_first_seen``
  (when the store first held the row) and ``_vigie_run`` (the run that last wrote it);
- schema ``_vigie``: ``meta`` (format, key ids), ``runs`` and ``table_runs`` (every sync),
  ``state`` (per-table checkpoints), ``columns`` (production types, for drift), and one
  ``deleted__<table>`` per table: the keys of rows deleted from production, with the time
  they were first seen and deleted, so that "which rows were present between T1 and T2"
  stays answerable after the rows are gone.

Beside it, ``<store>.kpi-state``: the KPI refresh's exact states (``vigie.kpi.state``),
encrypted with the same key, attached only by a refresh (``attach_kpi_state``). They are
derived and rebuildable; apart, a sync's checkpoint never walks them (a cold process's
first checkpoint reads the delete marks of every table that has some) and a served copy of
the store does not carry them. The store's ``_vigie.meta`` names the state file it goes
with; a state file it does not name is removed, never read.

No key is ever stored: only key ids, which cannot be turned back into keys.
"""

from __future__ import annotations

import copy
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from vigie.errors import KeyfileError, StoreError
from vigie.keys import Keys
from vigie.stores.extensions import load_extension
from vigie.stores.meta import KPI_STATE_DB, KPI_STATE_KEY, META, SCHEMA_SQL

FORMAT_VERSION = "1"
KPI_STATE_SUFFIX = ".kpi-state"


def check_modes(path: Path) -> None:
    """Refuse a store whose folder is not 0700 or whose files are not 0600. The store's
    real place is checked: a symlink into an open folder is refused like the open folder."""
    folder = path.resolve().parent
    mode = stat.S_IMODE(folder.stat().st_mode)
    if mode & 0o077:
        raise StoreError(
            f"Store folder {folder} is open to others (mode {mode:04o}); refusing to open "
            "the store.",
            hint=f"chmod 700 {folder}",
        )
    for file in store_files(path):
        if file.exists() and (fmode := stat.S_IMODE(file.stat().st_mode)) & 0o077:
            raise StoreError(
                f"Store file {file} is readable by others (mode {fmode:04o}); refusing to "
                "open the store.",
                hint=f"chmod 600 {file}",
            )


def kpi_state_path(path: Path) -> Path:
    """The KPI state file of the store at ``path``: beside the store's real file, in the
    folder whose mode is checked (not beside a symlink to it)."""
    real = path.resolve()
    return real.with_name(real.name + KPI_STATE_SUFFIX)


def store_files(path: Path) -> tuple[Path, ...]:
    """The store's files that hold data: the store, the KPI states, and their WALs."""
    state = kpi_state_path(path)
    return (path, _wal(path), state, _wal(state))


def _wal(path: Path) -> Path:
    return path.with_name(path.name + ".wal")


def _check_keyfile_apart(path: Path, keys: Keys) -> None:
    """Refuse a keyfile kept in the store's own folder: whoever copies the folder (a
    backup, a support bundle) would take the keys with the data they protect."""
    if keys.source in ("env", "") or not Path(keys.source).exists():
        return
    keyfile = Path(keys.source).resolve()
    if keyfile.parent == path.resolve().parent:
        raise KeyfileError(
            f"The keyfile {keys.source} is in the store's folder {keyfile.parent}: a copy of "
            "the folder would carry the keys with the data.",
            hint="Move the keyfile to a folder of its own (e.g. ~/.config/vigie/) and point "
            "--keyfile or VIGIE_KEYFILE at it.",
        )


class Store:
    """An open store. Use as a context manager; ``con`` is a private DuckDB connection.

    ``read_only`` attaches the file read-only and changes nothing in it (``vigie store
    verify``); ``check_file_modes=False`` opens a store whose modes are loose, for a check
    that reports them instead of refusing."""

    def __init__(
        self,
        path: Path,
        keys: Keys,
        *,
        create: bool = False,
        read_only: bool = False,
        check_file_modes: bool = True,
    ) -> None:
        self.path = path
        self.keys = keys
        self.read_only = read_only
        if not path.exists():
            if not create or read_only:
                raise StoreError(
                    f"No store at {path}.", hint="Run `vigie sync` first; it creates the store."
                )
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if check_file_modes:
            check_modes(path)
        _check_keyfile_apart(path, keys)
        self._old_umask = os.umask(0o077)
        self._opened = False
        self.con = duckdb.connect(config={"threads": 2})
        self.con.execute("SET enable_progress_bar = false")
        # One checkpoint when the store closes instead of one whenever the WAL passes 16 MB:
        # a mid-sync checkpoint rewrites every row group an incremental run touched so far
        # (measured: 0.3-2.5 s each). Commits stay durable: the WAL is synced at commit.
        self.con.execute("SET checkpoint_threshold = '4GB'")
        try:
            load_extension(self.con, "httpfs")  # DuckDB encrypts with httpfs's OpenSSL
            # What a large query spills goes beside the store (0700, by the umask) and is
            # encrypted, not to ./.tmp in clear (DuckDB's default for this connection).
            self.con.execute(f"SET temp_directory = '{_sql_str(str(self.spill_path))}'")
            self.con.execute("SET temp_file_encryption = true")
            self._attach()
            if not read_only:  # the lock is ours now
                self._fresh_path().unlink(missing_ok=True)  # left by a rewrite that crashed
                self.con.execute(SCHEMA_SQL)
            self._check_key_ids()
            self._opened = True
        except BaseException:
            self.close()
            raise

    @property
    def spill_path(self) -> Path:
        """Where DuckDB spills what does not fit in memory (encrypted, removed at close)."""
        return self.path.with_name(self.path.name + ".tmp")

    def _attach(self) -> None:
        mode = "READ_ONLY, " if self.read_only else ""
        try:
            self.con.execute(
                f"ATTACH '{_sql_str(str(self.path))}' AS store "
                f"({mode}ENCRYPTION_KEY '{self.keys.store_key}')"
            )
        except duckdb.Error as exc:
            text = self.keys.scrub(str(exc))
            if "encryption key" in text.lower() or "encrypted" in text.lower():
                raise KeyfileError(
                    f"Store {self.path} cannot be opened with this store key "
                    f"(key id {self.keys.store_key_id}).",
                    hint="Use the keyfile the store was created with.",
                ) from None
            if "conflicting lock" in text.lower():
                raise StoreError(
                    f"Store {self.path} is open in another process: {text.splitlines()[0]}",
                    hint="A store has one writer at a time: wait for that sync to end, or stop "
                    "the `vigie sync --every` that holds it.",
                ) from None
            raise StoreError(f"Cannot open store {self.path}: {text}") from None
        self.con.execute("USE store")

    def _check_key_ids(self) -> None:
        try:
            meta = dict(self.con.execute(f"SELECT key, value FROM {META}.meta").fetchall())
        except duckdb.CatalogException:
            raise StoreError(
                f"{self.path} is not a vigie store (it has no {META}.meta table).",
                hint="Check the path; a store is created by `vigie sync`.",
            ) from None
        if not meta and not self.read_only:
            now = datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="seconds")
            self.con.executemany(
                f"INSERT INTO {META}.meta VALUES (?, ?)",
                [
                    ("format_version", FORMAT_VERSION),
                    ("created_at", now),
                    ("pseudonym_key_id", self.keys.pseudonym_key_id),
                ],
            )
            return
        if meta.get("pseudonym_key_id") != self.keys.pseudonym_key_id:
            raise KeyfileError(
                f"Store {self.path} was built with another pseudonymization key "
                f"(key id {meta.get('pseudonym_key_id')}, given {self.keys.pseudonym_key_id}); "
                "its pseudonyms would not join.",
                hint="Use the keyfile the store was built with, or sync into a new store.",
            )

    def close(self) -> None:
        try:
            if self._opened and not self.read_only and self._kpi_state_orphaned():
                self.discard_kpi_state()  # e.g. pseudonyms rotated: old ones gone now
            self.con.close()
        finally:
            os.umask(self._old_umask)

    # -- the KPI state file ----------------------------------------------------------------

    @property
    def kpi_state_path(self) -> Path:
        return kpi_state_path(self.path)

    def attach_kpi_state(self) -> str:
        """Attach the KPI state file (made anew when missing, or when it is not the one the
        store names: the states were reset, or the file is another store's or under
        another key); returns the database name its tables are under."""
        token = self.kpi_state_token()
        if self._state_attached():
            if token is not None:
                return KPI_STATE_DB
            self.discard_kpi_state()  # disowned since it was attached (``reset_changes``)
        if token is not None and self.kpi_state_path.exists() and self._attach_named(token):
            return KPI_STATE_DB
        self.discard_kpi_state()
        token = secrets.token_hex(16)
        self._attach_state()
        self.con.execute(f"CREATE TABLE {KPI_STATE_DB}.main.meta (key VARCHAR PRIMARY KEY, "
                         "value VARCHAR)")  # fmt: skip
        for meta in (f"{KPI_STATE_DB}.main.meta", f"{META}.meta"):  # the file first
            self.con.execute(f"INSERT OR REPLACE INTO {meta} VALUES (?, ?)", [KPI_STATE_KEY, token])
        return KPI_STATE_DB

    def discard_kpi_state(self) -> None:
        """Remove the KPI state file (it is derived: the next refresh rebuilds it)."""
        if self._state_attached():
            self.con.execute(f"DETACH {KPI_STATE_DB}")
        for file in store_files(self.path)[2:]:
            file.unlink(missing_ok=True)

    def _state_attached(self) -> bool:
        return bool(self.rows("SELECT 1 FROM duckdb_databases() WHERE database_name = ?",
                              [KPI_STATE_DB]))  # fmt: skip

    def kpi_state_token(self) -> str | None:
        """The random token by which the store names its KPI state file (None: no file)."""
        rows = self.rows(f"SELECT value FROM {META}.meta WHERE key = ?", [KPI_STATE_KEY])
        return str(rows[0][0]) if rows else None

    def _kpi_state_orphaned(self) -> bool:
        """A state file the store no longer names (``meta.reset_changes`` unnamed it)."""
        return self.kpi_state_path.exists() and self.kpi_state_token() is None

    def _attach_named(self, token: str) -> bool:
        """Attach the state file and keep it attached if it holds ``token``; False (and
        detached) when it does not, or does not open with this store key."""
        try:
            self._attach_state()
        except StoreError:  # made under another store key, or not a DuckDB file
            return False
        try:
            held = self.rows(f"SELECT value FROM {KPI_STATE_DB}.main.meta WHERE key = ?",
                             [KPI_STATE_KEY])  # fmt: skip
        except duckdb.CatalogException:
            held = []
        if held == [(token,)]:
            return True
        self.con.execute(f"DETACH {KPI_STATE_DB}")
        return False

    @contextmanager
    def kpi_state_read_only(self) -> Iterator[str]:
        """The KPI state file attached read-only for a look; yields its database name.
        Raises ``StoreError`` when it does not open with this store's key."""
        self._attach_state(read_only=True)
        try:
            yield KPI_STATE_DB
        finally:
            self.con.execute(f"DETACH {KPI_STATE_DB}")

    def _attach_state(self, *, read_only: bool = False) -> None:
        """Attach the state file; ``StoreError`` (the key scrubbed) when it cannot be."""
        mode = "READ_ONLY, " if read_only else ""
        try:
            self.con.execute(
                f"ATTACH '{_sql_str(str(self.kpi_state_path))}' AS {KPI_STATE_DB} "
                f"({mode}ENCRYPTION_KEY '{self.keys.store_key}')"
            )
        except duckdb.Error as exc:
            raise StoreError(
                f"Cannot open the KPI state file {self.kpi_state_path}: "
                f"{self.keys.scrub(str(exc)).splitlines()[0]}",
                hint="It is derived: remove it, and vigie kpi refresh rebuilds it.",
            ) from None

    def _fresh_path(self) -> Path:
        return self.path.with_name(self.path.name + ".fresh")

    def rewrite_fresh(self) -> None:
        """Copy every live row into a new file and put it in place of this one.

        Dropping a table or a column frees its blocks, but their old bytes stay in the
        file until DuckDB reuses them. After values were removed (a tightened policy), the
        store is copied, table by table, into a new encrypted file that holds only what is
        live, which then replaces the old file (one rename); the old file is unlinked. A
        crash before the rename leaves the old store as it was (and a ``.fresh`` file the
        next open removes)."""
        fresh = self._fresh_path()
        fresh.unlink(missing_ok=True)
        self.con.execute("CHECKPOINT")
        self.con.execute(
            f"ATTACH '{_sql_str(str(fresh))}' AS fresh (ENCRYPTION_KEY '{self.keys.store_key}')"
        )
        try:
            self.con.execute("COPY FROM DATABASE store TO fresh")
            self.con.execute("DETACH fresh")
        except BaseException:
            self.con.execute("DETACH DATABASE IF EXISTS fresh")
            fresh.unlink(missing_ok=True)
            raise
        self.con.execute("USE memory")
        self.con.execute("DETACH store")
        fresh.replace(self.path)
        _fsync_dir(self.path.parent)
        self._attach()

    def cursor_view(self) -> Store:
        """This store on a new cursor of the same DuckDB, for one thread; release it with
        ``view.con.close()``. The cursor shares the database's settings (a locked-down
        store's cursors are locked down) and sees its last committed state."""
        view = copy.copy(self)
        view.con = self.con.cursor()
        view.con.execute("USE store")
        return view

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers ---------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield self.con
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    def rows(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        return self.con.execute(sql, params or []).fetchall()

    def has_table(self, name: str) -> bool:
        return bool(
            self.rows(
                "SELECT 1 FROM information_schema.tables WHERE table_catalog = 'store' "
                "AND table_schema = 'main' AND table_name = ?",
                [name],
            )
        )

    def columns(self) -> dict[str, dict[str, str]]:
        """Every synced table's columns and their types, in order (lineage columns too)."""
        out: dict[str, dict[str, str]] = {}
        for table, column, kind in self.rows(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_catalog = 'store' AND table_schema = 'main' ORDER BY ordinal_position"
        ):
            out.setdefault(table, {})[column] = kind
        return out

    def table_names(self) -> list[str]:
        return [
            r[0]
            for r in self.rows(
                "SELECT table_name FROM information_schema.tables WHERE table_catalog = 'store' "
                "AND table_schema = 'main' ORDER BY 1"
            )
        ]


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sql_str(text: str) -> str:
    return text.replace("'", "''")


def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
