"""HEAD wherever GET is answered, and a 405 whose `Allow` names every method its path takes (RFC 9110
§9.1: a server that answers GET answers HEAD; §15.5.6: `Allow` lists the methods the resource supports).

FastAPI answers the methods a route declares and nothing else: HEAD on /v1/videos, /v1/index or
/metrics was a 405, and a 405's `Allow` named the methods of the first route on the path only
(`PUT /v1/videos/{id}`: `allow: GET`, though DELETE is there too). Routes that declare HEAD themselves
keep it (media, thumbnails and clips answer it without sending or making the bytes; /healthz and
/readyz); for any other path a GET route takes, HEAD is that GET with its headers and no body.
"""

from __future__ import annotations

from starlette.routing import Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["MethodsForEveryPath"]

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")  # what a 405's Allow may name


class MethodsForEveryPath:
    """An ASGI layer inside the app's middleware (the latency metrics outside it still see HEAD)."""

    def __init__(self, app: ASGIApp, router: Router):
        self.app, self.router = app, router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "HEAD" and not self._matched(scope) and self._matched(get := {**scope, "method": "GET"}):
            try:
                await self.app(get, receive, _headers_only(send))
            finally:
                scope["route"] = get.get("route")  # what the router found, for the latency metrics' label
            return

        async def allow_all(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                allowed = self._allowed(scope)
                if allowed:
                    headers = [(k, v) for k, v in message.get("headers") or [] if k.lower() != b"allow"]
                    message = {**message, "headers": [*headers, (b"allow", ", ".join(allowed).encode())]}
            await send(message)

        await self.app(scope, receive, allow_all)

    def _matched(self, scope: Scope) -> bool:
        """Whether a route takes this path and method (a mount: any method)."""
        return any(route.matches(scope)[0] == Match.FULL for route in self.router.routes)

    def _allowed(self, scope: Scope) -> list[str]:
        """Every method a route on this path takes, HEAD wherever GET. Each is asked of the router as a
        request would be (FastAPI nests an included router's routes in one entry of `routes`)."""
        allowed = {m for m in METHODS if self._matched({**scope, "method": m})}
        if "GET" in allowed:
            allowed.add("HEAD")
        return [m for m in METHODS if m in allowed]


def _headers_only(send: Send) -> Send:
    """GET's answer as HEAD's: its status and headers (Content-Length included), no body."""

    async def head(message: Message) -> None:
        if message["type"] == "http.response.body":
            if message.get("more_body", False):
                return  # the end of the body sends the one (empty) body message
            message = {"type": "http.response.body", "body": b"", "more_body": False}
        await send(message)

    return head
