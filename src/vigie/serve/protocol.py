"""The data service's socket protocol: one JSON object per line, each way.

A request is ``{"op": NAME, "args": {...}}``; an answer ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": {"kind", "message", "hint"}}``. The ops are few and narrow
(``OPS``): what a logged-in user could ask, never a key, a file or a raw table.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from vigie import errors
from vigie.errors import Unavailable, UsageError, VigieError

OPS = ("ping", "kpis", "kpi", "sql", "status", "verify")
WATCH = b'{"op":"watch"}'  # a connection that streams the serving state (see DataService.watch)
MAX_LINE = 1 << 20  # requests are small; an answer may be large
_AF_UNIX_MAX = 107

_BY_KIND: dict[str, type[VigieError]] = {
    "usage": errors.UsageError,
    "config": errors.StoreError,
    "auth": errors.AuthError,
    "forbidden": errors.Forbidden,
    "refused": errors.Refused,
    "not_found": errors.NotFound,
    "unavailable": errors.Unavailable,
    "conflict": errors.TargetNotEmpty,
    "internal": errors.VigieError,
}


def socket_path(store: Path) -> Path:
    """Where the data service of ``store`` listens (beside it, in its 0700 folder)."""
    path = store.resolve().with_name(store.name + ".sock")
    if len(str(path).encode()) > _AF_UNIX_MAX:
        raise UsageError(
            f"The service socket path {path} is over {_AF_UNIX_MAX} bytes (a Unix socket limit).",
            hint="Put the store in a folder with a shorter path.",
        )
    return path


def error_to_wire(exc: VigieError) -> dict[str, Any]:
    return {"kind": exc.kind, "message": exc.message, "hint": exc.hint}


def error_from_wire(body: dict[str, Any]) -> VigieError:
    cls = _BY_KIND.get(str(body.get("kind")), VigieError)
    exc = cls(str(body.get("message", "The data service failed.")), hint=body.get("hint"))
    exc.kind = str(body.get("kind", "internal"))
    return exc


_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)  # built once, not per call


def encode(obj: Any) -> bytes:
    return _ENCODER.encode(obj).encode() + b"\n"


RAW_PREFIX = b'{"ok":true,"rows":'


def raw_line(body: bytes, rows: int) -> bytes:
    """An answer whose result is already JSON, with its row count up front."""
    return RAW_PREFIX + str(rows).encode() + b',"result":' + body + b"}\n"


def raw_result(line: bytes) -> tuple[int, bytes] | None:
    """(rows, the result's JSON) of a ``raw_line`` answer, without decoding it; None for
    any other answer (decode it with ``answer_of``)."""
    if not line.startswith(RAW_PREFIX):
        return None
    rows, sep, rest = line[len(RAW_PREFIX) :].partition(b',"result":')
    if not sep or not rows.isdigit():
        return None
    return int(rows), rest.rstrip(b"\n")[:-1]


def refused_for_service(line: bytes) -> bool:
    """Whether an answer is the service refusing (the guard closed the data, the service
    failed), rather than a request it found wrong."""
    try:
        error = json.loads(line).get("error") or {}
    except (ValueError, AttributeError):
        return True
    return error.get("kind") not in ("usage", "not_found", "forbidden", "refused")


def answer_of(line: bytes) -> Any:
    """The result of an answer line, or its error raised."""
    body = json.loads(line)
    if body.get("ok"):
        return body.get("result")
    raise error_from_wire(body.get("error") or {})


def running(store: Path) -> bool:
    """Whether a data service answers on ``store``'s socket."""
    path = socket_path(store)
    if not path.exists():
        return False
    try:
        ask(path, "ping", timeout=2.0)
    except Unavailable:
        return False
    return True


def ask(path: Path, op: str, args: dict[str, Any] | None = None, timeout: float = 300.0) -> Any:
    """One request on a fresh connection (the CLI's client)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(encode({"op": op, "args": args or {}}))
            with sock.makefile("rb") as fh:
                line = fh.readline()
    except OSError as exc:
        raise Unavailable(
            f"The data service at {path} did not answer ({exc.__class__.__name__}).",
            hint="Is `vigie serve` running for this store?",
        ) from None
    if not line:
        raise Unavailable(f"The data service at {path} closed the connection.")
    return answer_of(line)
