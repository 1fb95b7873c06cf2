"""``evflow.web.app``: the JSON API, the live event stream and the dashboard (docs/web.md).

Workflow ids and step names may hold any character, ``/`` included, so the routes under
``api/workflows/`` are split from the *raw* path (each segment percent-decoded on its
own): ``api/workflows/a%2Fb/events`` is the log of workflow ``a/b``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from .._errors import (
    CorruptLogError,
    NoEngineError,
    StepNotFoundError,
    WorkflowNotFoundError,
    WorkflowNotRunningError,
    WorkflowRunningError,
)
from .._projection import WorkflowStatus
from .._replay import Storage, open_reader
from .._step import validate_workflow_id
from ..engine import Engine
from ._auth import AccessMiddleware, error_body
from ._backend import (
    Backend,
    EngineBackend,
    ReaderBackend,
    SendUnsupportedError,
    event_json,
    state_json,
)
from ._lifespan import engine_lifespan

__all__ = ["app"]

STATIC = Path(__file__).parent / "static"

#: The dashboard runs only its own script and style, talks only to its own origin, and is
#: never framed: even a value that slipped past escaping could not run or load anything.
_PAGE_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}


class BadInput(Exception):
    """A request the API cannot take as it is (422)."""


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail


_NOSNIFF = {"x-content-type-options": "nosniff"}


def _json(value: Any, status: int = 200) -> Response:
    body = json.dumps(value, ensure_ascii=False, allow_nan=False).encode()
    return Response(body, status, media_type="application/json", headers=_NOSNIFF)


def _error(status: int, error: str, detail: str) -> Response:
    return Response(error_body(error, detail), status, media_type="application/json", headers=_NOSNIFF)


class EventStreamResponse(Response):
    """Server-Sent Events from an async generator of chunks, until it ends or the client
    goes away (then the generator is closed, which closes what it holds)."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self.status_code = 200
        self.background = None
        self.raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-store"),
            (b"x-accel-buffering", b"no"),
            (b"x-content-type-options", b"nosniff"),
        ]
        self.chunks = chunks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        async with anyio.create_task_group() as tg:

            async def stream() -> None:
                try:
                    async with aclosing(self.chunks) as chunks:  # type: ignore[type-var]
                        async for chunk in chunks:
                            await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                except OSError:
                    pass  # the client went away while we wrote
                tg.cancel_scope.cancel()

            tg.start_soon(stream)
            while (await receive())["type"] != "http.disconnect":
                pass
            tg.cancel_scope.cancel()


class _Web:
    """The app's configuration and its routes."""

    def __init__(self, engine: Engine | None, storage: Storage, read_only: bool) -> None:
        self.read_only = read_only
        self.storage = storage
        #: Set at startup when the app opens its own engine or store (``storage=``).
        self.backend: Backend | None = None if storage is not None else EngineBackend(engine)

    def require_backend(self) -> Backend:
        if self.backend is None:
            raise ApiError(
                503,
                "not_started",
                "this app opens its store at startup: run it as the top-level ASGI app "
                "(uvicorn) or pass it an engine (docs/web.md)",
            )
        return self.backend

    @asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        if self.storage is None:
            yield
            return
        if self.read_only:
            async with open_reader(self.storage) as store:
                self.backend = ReaderBackend(store)
                try:
                    yield
                finally:
                    self.backend = None
            return
        async with engine_lifespan(self.storage, {}) as engine:
            self.backend = EngineBackend(engine)
            try:
                yield
            finally:
                self.backend = None

    # -- pages ---------------------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        return Response((STATIC / "index.html").read_bytes(), media_type="text/html", headers=_PAGE_HEADERS)

    # -- the API -------------------------------------------------------------------------------

    async def guarded(self, request: Request, handler: Callable[[Request], Awaitable[Response]]) -> Response:
        try:
            return await handler(request)
        except ApiError as exc:
            return _error(exc.status, exc.error, exc.detail)
        except BadInput as exc:
            return _error(422, "invalid", str(exc))
        except (WorkflowNotFoundError, StepNotFoundError) as exc:
            return _error(404, "not_found", _one_line(exc))
        except (WorkflowRunningError, WorkflowNotRunningError) as exc:
            return _error(409, "conflict", _one_line(exc))
        except NoEngineError as exc:
            return _error(503, "no_engine", _one_line(exc))
        except CorruptLogError as exc:
            return _error(500, "damaged_log", _one_line(exc))
        except SendUnsupportedError:
            return _error(
                501,
                "not_implemented",
                "this evflow cannot deliver messages yet (Engine.send, SPEC section 8)",
            )

    async def info(self, request: Request) -> Response:
        async def handle(request: Request) -> Response:
            backend = self.require_backend()
            return _json(
                {
                    "storage": backend.url,
                    "read_only": self.read_only or not backend.writable,
                    "messages": backend.can_send(),
                }
            )

        return await self.guarded(request, handle)

    async def list_workflows(self, request: Request) -> Response:
        async def handle(request: Request) -> Response:
            wanted = _statuses(request.query_params.getlist("status"))
            listed = await self.require_backend().workflows(wanted)
            return _json([{"workflow_id": wid, "status": status.value} for wid, status in listed])

        return await self.guarded(request, handle)

    async def workflow(self, request: Request) -> Response:
        return await self.guarded(request, self.dispatch)

    async def dispatch(self, request: Request) -> Response:
        parts = _api_segments(request.scope)
        if not parts:
            raise ApiError(404, "not_found", "no such route")
        workflow_id = _workflow_id(parts[0])
        rest = parts[1:]
        method = request.method
        backend = self.require_backend()
        get = method in ("GET", "HEAD")
        if rest == [] and get:
            state, _ = await backend.state(workflow_id, _seq_param(request, "as_of"))
            return _json(state.metadata())
        if rest == ["state"] and get:
            state, last_seq = await backend.state(workflow_id, _seq_param(request, "as_of"))
            return _json(state_json(state, last_seq))
        if len(rest) == 2 and rest[0] == "steps" and get:
            state, _ = await backend.state(workflow_id, _seq_param(request, "as_of"))
            return _json(state.metadata(rest[1]))
        if rest == ["events"] and get:
            first = _seq_param(request, "from") or 1
            events = await backend.events(workflow_id, first - 1)
            return _json([event_json(event) for event in events])
        if rest == ["events", "stream"] and get:
            return await self.stream(request, backend, workflow_id)
        if rest in (["cancel"], ["resume"]) or (len(rest) == 2 and rest[0] == "messages"):
            if method != "POST":
                raise ApiError(405, "method_not_allowed", f"use POST for {rest[0]}")
            if self.read_only or not backend.writable:
                raise ApiError(403, "read_only", "this dashboard is read-only: it cannot change workflows")
            if rest == ["cancel"]:
                status = await backend.cancel(workflow_id)
                return _json({"workflow_id": workflow_id, "status": status.value})
            if rest == ["resume"]:
                status = await backend.resume(workflow_id)
                return _json({"workflow_id": workflow_id, "status": status.value})
            return await self.message(request, backend, workflow_id, rest[1])
        if rest and rest[0] in ("state", "steps", "events") and not get:
            raise ApiError(405, "method_not_allowed", "this route only answers GET")
        raise ApiError(404, "not_found", "no such route")

    async def stream(self, request: Request, backend: Backend, workflow_id: str) -> Response:
        first = _seq_param(request, "from") or 1
        after = first - 1
        last_id = request.headers.get("last-event-id")
        if last_id is not None and last_id.isdigit():
            after = max(after, int(last_id))  # a reconnecting EventSource resumes there
        await backend.state(workflow_id)  # 404 before the stream starts, not inside it

        async def chunks() -> AsyncIterator[bytes]:
            async with backend.follow(workflow_id, after) as events:
                async for event in events:
                    data = json.dumps(event_json(event), ensure_ascii=False)
                    yield f"id: {event.seq}\ndata: {data}\n\n".encode()
            state, _ = await backend.state(workflow_id)
            end = json.dumps({"status": state.status.value, "seq": state.last_seq})
            yield f"event: end\ndata: {end}\n\n".encode()

        return EventStreamResponse(chunks())

    async def message(self, request: Request, backend: Backend, workflow_id: str, topic: str) -> Response:
        if not backend.can_send():
            raise SendUnsupportedError()
        body = await request.body()
        try:
            payload = json.loads(body) if body.strip() else None
        except ValueError as exc:
            raise BadInput(f"the message body must be JSON: {exc}") from None
        key = request.headers.get("idempotency-key")
        try:
            await backend.send(workflow_id, topic, payload, key)
        except (ValueError, TypeError) as exc:
            raise BadInput(_one_line(exc)) from None
        return _json({"workflow_id": workflow_id, "topic": topic, "idempotency_key": key}, 202)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _statuses(values: list[str]) -> set[WorkflowStatus] | None:
    wanted: set[WorkflowStatus] = set()
    for value in values:
        for item in value.split(","):
            if not item.strip():
                continue
            try:
                wanted.add(WorkflowStatus(item.strip().upper()))
            except ValueError:
                choices = ", ".join(s.value for s in WorkflowStatus)
                raise BadInput(f"unknown status {item!r}; expected one of {choices}") from None
    return wanted or None


def _seq_param(request: Request, name: str) -> int | None:
    text = request.query_params.get(name)
    if text is None:
        return None
    if not text.isdigit() or int(text) < 1:
        raise BadInput(f"{name} must be a sequence number (an integer >= 1), not {text!r}")
    return int(text)


def _workflow_id(text: str) -> str:
    try:
        return validate_workflow_id(text)
    except (TypeError, ValueError) as exc:
        raise BadInput(str(exc)) from None


def _api_segments(scope: Scope) -> list[str]:
    """The percent-decoded segments after ``api/workflows/`` of the raw request path."""
    raw: bytes = scope.get("raw_path") or quote(scope["path"]).encode()
    parts = raw.split(b"?", 1)[0].decode("latin-1").split("/")[1:]
    root = [p for p in scope.get("root_path", "").split("/") if p]
    parts = parts[len(root) :]
    if parts[:2] != ["api", "workflows"]:
        raise ApiError(404, "not_found", "no such route")
    out = []
    for part in parts[2:]:
        try:
            out.append(unquote(part, errors="strict"))
        except UnicodeDecodeError:
            raise BadInput("the path is not percent-encoded UTF-8") from None
    if out and out[-1] == "":
        raise ApiError(404, "not_found", "no such route (trailing slash)")
    return out


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return _error(exc.status_code, error, str(exc.detail))


def app(
    engine: Engine | None = None,
    *,
    storage: Storage = None,
    read_only: bool = False,
    token: str | None = None,
) -> Starlette:
    """The evflow web app (JSON API, event stream, dashboard) to run or mount.

    ``engine``: the engine to serve; None serves the current engine of each request (the
    one ``evflow.web.lifespan`` opened). ``storage`` (with no engine): the app opens its own
    at startup, as ``lifespan`` does, or with ``read_only`` just the store, read-only;
    this needs the app to get the ASGI lifespan (run it top-level, not mounted).
    ``read_only`` refuses cancel, resume and messages (403). ``token``: every request needs
    ``Authorization: Bearer <token>`` (the dashboard: open ``/?token=<token>`` once).
    """
    if engine is not None and storage is not None:
        raise ValueError("pass an engine or a storage, not both")
    if token is not None and not token:
        raise ValueError("token must not be empty (None: no token)")
    web = _Web(engine, storage, read_only)
    routes = [
        Route("/", web.index, methods=["GET", "HEAD"]),
        Route("/api/info", web.info, methods=["GET", "HEAD"]),
        Route("/api/workflows", web.list_workflows, methods=["GET", "HEAD"]),
        Route("/api/workflows/{rest:path}", web.workflow, methods=["GET", "HEAD", "POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    handlers: Mapping[Any, Any] = {HTTPException: _http_error}
    return Starlette(
        routes=routes,
        middleware=[Middleware(AccessMiddleware, token=token)],
        exception_handlers=handlers,
        lifespan=web.lifespan,
    )
