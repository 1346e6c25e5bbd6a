"""The FastAPI app: routes, one error format, the audit of every request, the dashboard.

Every route but ``PUBLIC`` goes through ``Gate.require`` (that is, ``allowed``); the tests
enumerate the app's routes, so a new route is checked without anyone listing it.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import Body, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from vigie.access.decide import Action
from vigie.access.keys import AccessFile
from vigie.audit.log import AuditLog, read_entries
from vigie.errors import AuditError, UsageError, VigieError
from vigie.serve import protocol
from vigie.server.answers import Answers
from vigie.server.auth import SESSION_COOKIE, SESSION_TTL, Gate, check_origin, client_of
from vigie.server.datalink import DataLink

STATUS = {
    "usage": 400,
    "config": 500,
    "auth": 401,
    "rate_limited": 429,
    "forbidden": 403,
    "not_found": 404,
    "refused": 422,
    "unavailable": 503,
    "conflict": 409,
    "internal": 500,
}
PUBLIC = {"/healthz", "/login", "/static/{name}", "/api/session"}  # no data behind them
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
STATIC = resources.files("vigie.server") / "static"
ASSETS = {
    "app.js": "text/javascript",
    "login.js": "text/javascript",
    "chart.js": "text/javascript",
    "style.css": "text/css",
}

log = logging.getLogger("vigie.web")
API_KEY = re.compile(r"vk_[0-9a-f]{12}_[A-Za-z0-9_-]{20,}")  # what an API key looks like

Asgi = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[Any]]


@dataclass(frozen=True)
class WebSettings:
    socket: Path
    access: Path
    audit_log: Path
    tls: bool = False


def error_body(kind: str, message: str, hint: str | None = None) -> dict[str, Any]:
    return {
        "error": {"kind": kind, "status": STATUS.get(kind, 500), "message": message, "hint": hint}
    }


def create_app(settings: WebSettings) -> FastAPI:
    answers = Answers(settings.socket)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        follow = asyncio.create_task(answers.follow())
        yield
        follow.cancel()

    app = FastAPI(title="vigie", version="1", openapi_url=None, docs_url=None, redoc_url=None,
                  lifespan=lifespan)  # fmt: skip
    gate = Gate(AccessFile(settings.access))
    audit = AuditLog(settings.audit_log)
    data = DataLink(settings.socket, answers)
    app.state.gate, app.state.audit, app.state.settings = gate, audit, settings
    _errors(app)
    _routes(app, gate, data, settings)
    _pages(app, gate, settings)
    app.add_middleware(AuditMiddleware, audit=audit, tls=settings.tls)
    return app


def _errors(app: FastAPI) -> None:
    @app.exception_handler(VigieError)
    async def vigie_error(request: Request, exc: VigieError) -> JSONResponse:
        request.state.kind = exc.kind
        return JSONResponse(error_body(exc.kind, exc.message, exc.hint), STATUS.get(exc.kind, 500))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        request.state.kind = "usage"
        where = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return JSONResponse(error_body("usage", f"Invalid request: {where[:300]}"), 400)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "usage"}.get(exc.status_code, "usage")
        request.state.kind = kind
        return JSONResponse(error_body(kind, str(exc.detail)), exc.status_code)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        request.state.kind = "internal"
        return JSONResponse(
            error_body(
                "internal", "vigie failed on this request.", "The server's log has the details."
            ),
            500,
        )


def _routes(app: FastAPI, gate: Gate, data: DataLink, settings: WebSettings) -> None:
    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        """Open or closed (and which checks fail), without authentication and without data;
        the reasons themselves are at /api/guard for admins and responders."""
        try:
            health = await data.ask("health", timeout=5.0)
        except VigieError:
            health = {"status": "closed", "failing": ["data service not answering"]}
        return JSONResponse(health, 200 if health.get("status") == "ok" else 503)

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> JSONResponse:
        gate.require(request, Action.READ_SCHEMA)
        return JSONResponse(app.openapi())

    @app.get("/api/whoami")
    async def whoami(request: Request) -> dict[str, Any]:
        """The caller's key name, role and expiry."""
        actor = gate.require(request, Action.READ_SCHEMA)
        return {"name": actor.name, "role": str(actor.role), "expires_at": actor.expires_at}

    @app.get("/api/kpis")
    async def kpis(request: Request) -> Any:
        """The declared KPIs, their dimensions and k."""
        gate.require(request, Action.READ_KPIS)
        return JSONResponse(await data.ask("kpis"))

    @app.get("/api/kpis/{name}", openapi_extra={"parameters": KPI_PARAMETERS})
    async def kpi(request: Request) -> Any:
        """One KPI over whole periods, one dimension at a time, small cells suppressed
        (the same compiler and pattern as `vigie kpi show`). ``format=csv`` streams CSV."""
        # parameters are parsed by hand (``kpi_params``) and documented in KPI_PARAMETERS:
        # FastAPI's per-parameter validation was a fifth of the web process's time on this,
        # the busiest route
        gate.require(request, Action.READ_KPIS)
        name: str = request.path_params["name"]
        args, format = kpi_params(request.scope.get("query_string", b""))
        line = await data.kpi(name[:100], args, request.scope.get("query_string", b""))
        raw = protocol.raw_result(line)
        if format == "json" and raw is not None:  # passed through as the data process wrote it
            request.state.rows = raw[0]
            return Response(raw[1], media_type="application/json")
        answer = protocol.answer_of(line)
        request.state.rows = len(answer["cells"])
        if format == "csv":
            return StreamingResponse(
                _csv(answer),
                media_type="text/csv",
                headers={"content-disposition": f'attachment; filename="{answer["kpi"]}.csv"'},
            )
        return JSONResponse(answer)  # already plain JSON: no re-encoding pass

    @app.post("/api/sql")
    async def sql(
        request: Request,
        body: Annotated[dict[str, Any], Body(examples=[{"sql": "SELECT count(*) FROM devices"}])],
    ) -> Any:
        """One read-only SELECT/WITH over the replica's tables (engineer), sandboxed, with
        a time limit and a row cap."""
        gate.require(request, Action.RUN_SQL)
        statement = body.get("sql")
        if not isinstance(statement, str) or not statement.strip():
            raise UsageError('Send {"sql": "SELECT ..."}.')
        request.state.sql = statement[:2000]
        max_rows = body.get("max_rows")
        if max_rows is not None and (not isinstance(max_rows, int) or not 1 <= max_rows <= 100_000):
            raise UsageError("max_rows must be an integer from 1 to 100000.")
        answer = await data.ask("sql", {"sql": statement, "max_rows": max_rows})
        request.state.rows = len(answer["rows"])
        return JSONResponse(answer)  # already plain JSON: no re-encoding pass

    @app.get("/api/audit")
    async def audit_log(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
        actor: Annotated[str, Query(max_length=64)] = "",
    ) -> Any:
        """The latest audit entries, newest last (responder)."""
        gate.require(request, Action.READ_AUDIT)
        entries = read_entries(settings.audit_log)
        if actor:
            entries = [e for e in entries if e.get("actor") == actor]
        request.state.rows = min(limit, len(entries))
        return {"entries": entries[-limit:]}

    @app.get("/api/guard")
    async def guard(request: Request) -> Any:
        """The guard's checks: each one's last result, reason, fix and when (admin,
        responder)."""
        gate.require(request, Action.READ_GUARD)
        return JSONResponse(await data.ask("guard"))

    @app.get("/api/incidents/report")
    async def incident_report(
        request: Request,
        from_: Annotated[str, Query(alias="from", max_length=40)] = "",
        to: Annotated[str, Query(max_length=40)] = "",
        format: Annotated[str, Query(max_length=10)] = "json",
    ) -> Any:
        """The exposure report of a window [from, to): what was readable, whose rows, what
        the audit log and the guard saw, the rotations to run (responder)."""
        # parameters are checked after the gate: a stranger learns nothing but 401
        gate.require(request, Action.READ_INCIDENTS)
        if not from_ or not to or format not in ("json", "md", "html"):
            raise UsageError("Give from= and to= (ISO, UTC) and format=json, md or html.")
        answer = await data.ask("incident", {"from": from_, "to": to, "format": format})
        if format == "json":
            request.state.rows = len(answer["report"]["tables"])
            return JSONResponse(answer["report"])
        media = "text/markdown" if format == "md" else "text/html"
        return Response(answer["text"], media_type=f"{media}; charset=utf-8")

    @app.get("/api/status")
    async def status(request: Request) -> Any:
        """Sync runs, rollup freshness, the snapshot being served."""
        gate.require(request, Action.READ_STATUS)
        return JSONResponse(await data.ask("status"))


KPI_LIMITS = {"by": 200, "from": 40, "to": 40, "grain": 10, "where": 200, "format": 4}
KPI_PARAMETERS = [
    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"},
     "description": "The KPI, as listed by GET /api/kpis."},
    {"name": "by", "in": "query", "schema": {"type": "string", "maxLength": 200, "default": ""},
     "description": "Dimensions, comma-separated (model, firmware, country)."},
    {"name": "from", "in": "query", "schema": {"type": "string", "maxLength": 40},
     "description": "First day (ISO date, UTC); default: the store's range."},
    {"name": "to", "in": "query", "schema": {"type": "string", "maxLength": 40},
     "description": "Day after the last (ISO date, UTC)."},
    {"name": "grain", "in": "query",
     "schema": {"type": "string", "maxLength": 10, "default": "day"}},
    {"name": "where", "in": "query", "description": "Filters such as country=FR; repeatable.",
     "schema": {"type": "array", "items": {"type": "string", "maxLength": 200}, "maxItems": 20}},
    {"name": "format", "in": "query",
     "schema": {"type": "string", "enum": ["json", "csv"], "default": "json"}},
]  # fmt: skip


def kpi_params(query: bytes) -> tuple[dict[str, Any], str]:
    """The KPI route's query string, checked: (the data service's args, the format)."""
    args: dict[str, Any] = {"by": "", "from": "", "to": "", "grain": "day", "where": []}
    format = "json"
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    for key, value in pairs:
        if key not in KPI_LIMITS:
            raise UsageError(f"Unknown parameter {key[:40]!r}.",
                             hint="Use by, from, to, grain, where and format.")  # fmt: skip
        if len(value) > KPI_LIMITS[key]:
            raise UsageError(f"Parameter {key} is over {KPI_LIMITS[key]} characters.")
        if key == "where":
            args["where"].append(value)
        elif key == "format":
            format = value
        else:
            args[key] = value
    if format not in ("json", "csv"):
        raise UsageError(f"format must be json or csv, not {format[:10]!r}.")
    if len(args["where"]) > 20:
        raise UsageError("At most 20 where= filters.")
    return args, format


def _pages(app: FastAPI, gate: Gate, settings: WebSettings) -> None:
    @app.get("/", include_in_schema=False)
    async def dashboard(request: Request) -> Response:
        try:
            gate.require(request, Action.READ_SCHEMA)
        except VigieError as exc:
            request.state.kind = exc.kind
            return HTMLResponse(_asset("unauth.html"), STATUS.get(exc.kind, 401))
        return HTMLResponse(_asset("index.html"))

    @app.get("/login", include_in_schema=False)
    async def login_page() -> Response:
        return HTMLResponse(_asset("login.html"))

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        if name not in ASSETS:
            raise HTTPException(404, f"No asset {name[:40]!r}.")
        return Response(_asset(name), media_type=ASSETS[name])

    @app.post("/api/session", include_in_schema=False)
    async def login(request: Request, body: Annotated[dict[str, Any], Body()]) -> Response:
        """Exchange an API key for a session cookie (the dashboard's login)."""
        check_origin(request)
        key = body.get("key")
        if not isinstance(key, str):
            raise UsageError('Send {"key": "vk_..."}.')
        sid, actor = gate.login(key, client_of(request))
        request.state.actor = actor
        response = JSONResponse({"name": actor.name, "role": str(actor.role)})
        response.set_cookie(
            SESSION_COOKIE,
            sid,
            max_age=int(SESSION_TTL),
            httponly=True,
            samesite="strict",
            secure=settings.tls,
            path="/",
        )
        return response

    @app.post("/api/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        gate.require(request, Action.READ_SCHEMA)
        gate.logout(request.cookies.get(SESSION_COOKIE))
        response = JSONResponse({"logged_out": True})
        response.delete_cookie(
            SESSION_COOKIE, path="/", samesite="strict", httponly=True, secure=settings.tls
        )
        return response


def _asset(name: str) -> bytes:
    return (STATIC / name).read_bytes()


def _csv(answer: dict[str, Any]) -> Any:
    dims = answer["by"]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["period", *dims, answer["kpi"], "suppressed"])
    yield buf.getvalue()
    for cell in answer["cells"]:
        buf.seek(0)
        buf.truncate()
        values = cell["dims"] if not cell["total"] else ["(all)"] * len(dims)
        value = "" if cell["value"] is None else cell["value"]
        writer.writerow([cell["period"], *values, value, str(cell["suppressed"]).lower()])
        yield buf.getvalue()


class AuditMiddleware:
    """Records every request before its answer leaves; if the record cannot be written,
    the client gets 503 instead of the answer. Adds the security headers to every answer."""

    def __init__(self, app: Asgi, audit: AuditLog, tls: bool) -> None:
        self.app, self.audit, self.tls = app, audit, tls
        self.group = AuditGroup(audit)

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})
        failed = False

        async def send_audited(message: MutableMapping[str, Any]) -> None:
            nonlocal failed
            if failed:
                return
            if message["type"] == "http.response.start":
                try:
                    await self.group.record(self._entry(scope, message["status"]))
                except AuditError as exc:
                    failed = True
                    body = json.dumps(
                        error_body(
                            "unavailable",
                            "The audit log cannot be written; the request was not served.",
                            exc.hint,
                        )
                    ).encode()
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 503,
                            "headers": self._headers([(b"content-type", b"application/json")]),
                        }
                    )
                    await send({"type": "http.response.body", "body": body})
                    return
                message["headers"] = self._headers(list(message.get("headers", [])))
            await send(message)

        await self.app(scope, receive, send_audited)

    def _headers(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        extra = [
            (b"content-security-policy", CSP.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"x-frame-options", b"DENY"),
            (b"cache-control", b"no-store"),
        ]
        if self.tls:
            extra.append((b"strict-transport-security", b"max-age=31536000"))
        return headers + extra

    def _entry(self, scope: MutableMapping[str, Any], status: int) -> dict[str, Any]:
        state = scope["state"]
        actor = state.get("actor")
        route = scope.get("route")
        params: dict[str, Any] = {}
        for key, value in _query_pairs(scope):
            params.setdefault(_scrub(key)[:40], []).append(_scrub(value)[:200])
        if "sql" in state:
            params["sql"] = _scrub(state["sql"])
        client = scope.get("client")
        return {
            "actor": actor.name if actor else None,
            "role": str(actor.role) if actor else None,
            "method": scope["method"],
            "path": _scrub(scope["path"])[:300],
            "route": getattr(route, "path", None),
            "params": params,
            "status": status,
            "rows": state.get("rows"),
            "kind": state.get("kind"),
            "reason": state.get("reason"),
            "client": client[0] if client else None,
        }


class AuditGroup:
    """Group commit of the web process's audit entries: the requests answered in one turn
    of the event loop are appended together (one lock, one write, one head update), and
    each answer waits until its entry is written, or fails with the group's AuditError."""

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit
        self._pending: list[tuple[dict[str, Any], asyncio.Future[None]]] = []

    async def record(self, entry: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._pending.append((entry, done))
        if len(self._pending) == 1:
            loop.call_soon(self._flush)
        await done

    def _flush(self) -> None:
        group, self._pending = self._pending, []
        try:
            self.audit.append_many([entry for entry, _ in group])
        except Exception as exc:  # every waiter gets an answer, never a hang
            if not isinstance(exc, AuditError):
                log.error("audit group failed", exc_info=exc)
                exc = AuditError(f"The audit entry could not be made ({type(exc).__name__}).")
            for _, done in group:
                if not done.done():
                    done.set_exception(exc)
            return
        for _, done in group:
            if not done.done():  # a request cancelled meanwhile (client gone) is written too
                done.set_result(None)


def _scrub(text: str) -> str:
    """``text`` with anything shaped like an API key replaced: a key pasted in the wrong
    place (a query string, a SQL comment) never reaches the audit log."""
    return API_KEY.sub("vk_[redacted]", text) if "vk_" in text else text


def _query_pairs(scope: MutableMapping[str, Any]) -> list[tuple[str, str]]:
    query = scope.get("query_string", b"")
    return parse_qsl(query.decode("latin-1"), keep_blank_values=True) if query else []
