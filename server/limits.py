"""Request body limits: a body over its limit gets 413 before it is read or parsed (FastAPI's
`max_body_size`: Content-Length checked first, then the bytes counted as a chunked body streams).

A job or a words-only search takes a few kilobytes (`BODY_LIMIT`). A search may carry a picture, as
base64 in the JSON body or as a multipart file, up to `max_image_mb`: the app's limit is that plus
the base64 overhead (`body_limit`), and routes that never take pictures (jobs) keep `BODY_LIMIT`.
"""

from __future__ import annotations

import json
import math

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vidsearch.config import Settings

__all__ = ["BODY_LIMIT", "JsonTooLarge", "body_limit", "too_large_detail"]

BODY_LIMIT = 256 << 10  # bytes: every request without a picture


def body_limit(settings: Settings) -> int:
    """The app-wide limit: `BODY_LIMIT` plus the largest picture a search accepts, base64-encoded."""
    return BODY_LIMIT + math.ceil(settings.max_image_mb * 1e6 * 4 / 3)


def too_large_detail(settings: Settings) -> str:
    return (f"the request body is too large: a job takes up to {BODY_LIMIT >> 10} KB, any other request up to "
            f"{body_limit(settings) / 1e6:.1f} MB (room for a base64 picture of {settings.max_image_mb:g} MB: max_image_mb)")


# the body limit's answers: plain text where the Content-Length said so, JSON where a streamed body
# went past it while a route read it
STARLETTE_413 = (b"Content Too Large", b'{"detail":"Content Too Large"}')


class JsonTooLarge:
    """The outermost layer: Starlette's body limit answers 413 "Content Too Large" (in plain text, or
    in JSON), where every other error of this API says what to do; this rewrites those responses to
    JSON naming the limits (matched by their exact bodies: the API's own 413s pass untouched)."""

    def __init__(self, app: ASGIApp, detail: str):
        self.app, self.body = app, json.dumps({"detail": detail}).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: Message | None = None

        async def rewrite(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and message["status"] == 413:
                held = message  # its body decides whether it is the body limit's
                return
            if held is not None and message["type"] == "http.response.body":
                start, held = held, None
                if message.get("body", b"") in STARLETTE_413 and not message.get("more_body", False):
                    headers = [(k, v) for k, v in start.get("headers") or [] if k not in (b"content-type", b"content-length")]
                    await send({**start, "headers": headers + [(b"content-type", b"application/json"), (b"content-length", str(len(self.body)).encode())]})
                    await send({"type": "http.response.body", "body": self.body})
                    return
                await send(start)
            await send(message)

        await self.app(scope, receive, rewrite)
