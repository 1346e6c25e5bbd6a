"""The keyfile: the pseudonymization key and the store key, 0600, never elsewhere.

Lookup chain (the first that is set wins, and the summary says which one supplied them):
1. ``--keyfile PATH`` on the command line;
2. the ``VIGIE_KEYFILE`` environment variable (a path);
3. the ``VIGIE_PSEUDONYM_KEY`` and ``VIGIE_STORE_KEY`` environment variables (64 hex chars each).

No key is ever written to the store, a log line or an error message. The store only keeps a
key *id* (an HMAC of a constant under the key) to refuse a sync with the wrong key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from vigie.errors import KeyfileError

KEYFILE_VERSION = 1
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Keys:
    """Key material. ``repr`` and ``str`` never show it."""

    pseudonym_key: str = field(repr=False)  # 64 hex chars; its ASCII bytes are the HMAC key
    store_key: str = field(repr=False)  # 64 hex chars; DuckDB's ENCRYPTION_KEY
    source: str = ""  # where they came from, for the summary

    @property
    def pseudonym_key_id(self) -> str:
        return _key_id(self.pseudonym_key, "pseudonym")

    @property
    def store_key_id(self) -> str:
        return _key_id(self.store_key, "store")

    def scrub(self, text: str) -> str:
        """``text`` with any key material replaced by ``***``."""
        for secret in (self.pseudonym_key, self.store_key):
            text = text.replace(secret, "***")
        return text


def _key_id(key: str, purpose: str) -> str:
    return hmac.new(key.encode(), f"vigie key id: {purpose}".encode(), hashlib.sha256).hexdigest()[
        :16
    ]


def init_keyfile(path: Path, *, force: bool = False) -> Keys:
    """Write a new keyfile with fresh random keys, mode 0600. Never overwrite silently."""
    if path.exists() and not force:
        raise KeyfileError(
            f"Keyfile {path} already exists; refusing to overwrite it.",
            hint="A store synced with it cannot be read or extended without it. "
            "Choose another path, or pass --force if you really mean to replace it.",
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = Keys(secrets.token_hex(32), secrets.token_hex(32), source=str(path))
    write_keyfile(path, keys)
    return keys


def write_keyfile(path: Path, keys: Keys) -> None:
    """``keys`` into ``path`` (0600, through a fresh temporary file: see ``_write_private``)."""
    body = {
        "version": KEYFILE_VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "pseudonym_key": keys.pseudonym_key,
        "store_key": keys.store_key,
    }
    _write_private(path, json.dumps(body, indent=2).encode())


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a fresh temporary file of its own: created
    exclusively (never an existing file or a symlink planted there), 0600, fsynced, then
    renamed over ``path`` and the folder fsynced."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def load_keys(keyfile: Path | None = None) -> Keys:
    """Find the keys along the lookup chain, checking file modes and formats."""
    if keyfile is not None:
        return _read_keyfile(keyfile, "--keyfile")
    if env_path := os.environ.get("VIGIE_KEYFILE"):
        return _read_keyfile(Path(env_path), "VIGIE_KEYFILE")
    pk, sk = os.environ.get("VIGIE_PSEUDONYM_KEY"), os.environ.get("VIGIE_STORE_KEY")
    if pk and sk:
        return Keys(_check_hex(pk, "VIGIE_PSEUDONYM_KEY"), _check_hex(sk, "VIGIE_STORE_KEY"), "env")
    raise KeyfileError(
        "No keys: vigie needs its pseudonymization and store keys.",
        hint="Create a keyfile with `vigie keys init --keyfile PATH` and pass --keyfile PATH "
        "(or set VIGIE_KEYFILE).",
    )


def _read_keyfile(path: Path, via: str) -> Keys:
    try:
        real = path.resolve(strict=True)  # the file itself, symlinks followed
        st = real.stat()
    except (FileNotFoundError, RuntimeError):
        raise KeyfileError(
            f"Keyfile {path} (from {via}) does not exist.",
            hint="Create one with `vigie keys init --keyfile PATH`.",
        ) from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyfileError(
            f"Keyfile {path} (from {via}) is not a file.",
            hint="Point it at the file `vigie keys init` wrote.",
        )
    folder_mode = stat.S_IMODE(real.parent.stat().st_mode)
    if folder_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise KeyfileError(
            f"Keyfile {path} is in {real.parent}, a folder others can write to "
            f"(mode {folder_mode:04o}): they could replace the keys.",
            hint=f"Move it to a folder of your own (chmod 700), or chmod go-w {real.parent}",
        )
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyfileError(
            f"Keyfile {path} is readable by others (mode {stat.S_IMODE(st.st_mode):04o}).",
            hint=f"Restrict it: chmod 600 {path}",
        )
    try:
        body = json.loads(real.read_text())
        pk, sk = body["pseudonym_key"], body["store_key"]
    except (ValueError, KeyError, TypeError):
        raise KeyfileError(
            f"Keyfile {path} is not a vigie keyfile (expected JSON with pseudonym_key and "
            "store_key).",
            hint="Point --keyfile at the file `vigie keys init` wrote.",
        ) from None
    return Keys(
        _check_hex(pk, f"{path}: pseudonym_key"), _check_hex(sk, f"{path}: store_key"), str(path)
    )


def _check_hex(value: object, what: str) -> str:
    if not isinstance(value, str) or not _HEX64.match(value):
        raise KeyfileError(
            f"{what} is not a key of 64 lower-case hex characters.",
            hint="Generate keys with `vigie keys init --keyfile PATH`.",
        )
    return value
