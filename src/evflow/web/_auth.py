"""Access control for the web app, as ASGI middleware around it.

- ``token``: every request needs ``Authorization: Bearer <token>``. A browser cannot send
  that header when it loads a page, so the dashboard is opened once as ``/?token=<token>``:
  the app answers with a session cookie (HttpOnly, SameSite=Strict, scoped to the app's
  path) and a redirect to ``/`` that takes the token out of the address bar; the cookie
  then stands for the header. Without either: 401 (JSON under ``api/``, a small form to
  enter the token elsewhere).
- Every POST that carries an ``Origin`` other than the app's own is refused (403): a page
  of another site cannot make the browser cancel or resume a workflow, token or not.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["COOKIE", "AccessMiddleware", "error_body"]

COOKIE = "evflow_token"

_LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>evflow: token needed</title></head>
<body style="font-family: sans-serif; margin: 3em">
<h1>evflow</h1>
<p>This dashboard needs its access token (printed by <code>evflow ui</code>, or set by the app).</p>
<form method="get" action="./"><input name="token" type="password" autofocus size="40">
<button type="submit">Open</button></form>
</body></html>
"""


def error_body(error: str, detail: str) -> bytes:
    """The JSON of every error answer: ``{"error", "detail"}``."""
    return json.dumps({"error": error, "detail": detail}).encode()


class AccessMiddleware:
    """Checks the bearer token (or its cookie) and the origin of POSTs before ``app`` runs."""

    def __init__(self, app: ASGIApp, *, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope["headers"])
        method = scope["method"]
        if method not in ("GET", "HEAD") and not _same_origin(headers):
            detail = "a cross-origin request may not change anything"
            await _answer(send, 403, error_body("forbidden", detail))
            return
        if self.token is None or self._authorized(headers):
            await self.app(scope, receive, send)
            return
        root = scope.get("root_path", "").rstrip("/")
        path = scope["path"][len(root) :] if scope["path"].startswith(root) else scope["path"]
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        offered = query.get("token", [None])[0]
        if method == "GET" and path in ("", "/") and offered is not None and self._matches(offered):
            cookie = SimpleCookie()
            cookie[COOKIE] = self.token
            morsel = cookie[COOKIE]
            morsel["path"] = root + "/"
            morsel["httponly"] = True
            morsel["samesite"] = "Strict"
            extra = [
                (b"location", (root + "/").encode("latin-1")),
                (b"set-cookie", morsel.OutputString().encode("latin-1")),
            ]
            await _answer(send, 303, b"", extra, content_type=b"text/plain")
            return
        if path.startswith("/api/") or method != "GET":
            detail = "send the header 'Authorization: Bearer <token>'"
            await _answer(send, 401, error_body("unauthorized", detail), [(b"www-authenticate", b"Bearer")])
            return
        await _answer(send, 401, _LOGIN_PAGE.encode(), content_type=b"text/html; charset=utf-8")

    def _matches(self, offered: str) -> bool:
        assert self.token is not None
        return hmac.compare_digest(offered.encode(), self.token.encode())

    def _authorized(self, headers: dict[str, str]) -> bool:
        auth = headers.get("authorization", "")
        scheme, _, credentials = auth.partition(" ")
        if scheme.lower() == "bearer" and self._matches(credentials.strip()):
            return True
        cookies = SimpleCookie()
        try:
            cookies.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header is no credential
            return False
        morsel = cookies.get(COOKIE)
        return morsel is not None and self._matches(morsel.value)


def _headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in raw:
        name = key.decode("latin-1").lower()
        text = value.decode("latin-1")
        out[name] = f"{out[name]}; {text}" if name == "cookie" and name in out else text
    return out


def _same_origin(headers: dict[str, str]) -> bool:
    origin = headers.get("origin")
    if origin is None:
        return True  # not sent by a browser's cross-site request: curl, httpx, a same-origin GET
    return urlsplit(origin).netloc.lower() == headers.get("host", "").lower()


async def _answer(
    send: Send,
    status: int,
    body: bytes,
    extra: list[tuple[bytes, bytes]] | None = None,
    *,
    content_type: bytes = b"application/json",
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
