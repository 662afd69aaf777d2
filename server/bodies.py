"""Request bodies that hold no text, refused where they are parsed; error answers that render whatever
they echo.

JSON may spell a lone UTF-16 surrogate (`"\\ud800"`), which Python's parser turns into a `str` that no
UTF-8 encoder takes. Such a string passed the models (pydantic keeps a list's or a dict's strings as
they are) and failed later, each time as a plain-text 500 with a traceback: in a search's filters (the
response cache's key), in a job's path (`os.fsencode`), in the detail of an error that echoed it
(Starlette's JSONResponse encodes strictly). So a JSON body is looked at once, after FastAPI's own
parse and the route's key check, before the endpoint sees it (`CheckedBody`, the route class of every
router whose routes take a body; search's multipart `request` part is looked at by search.py the same way), and one holding a
lone surrogate anywhere, in a value or a key, is a 422 naming where. `SafeJSONResponse` renders the
app's error answers: text it cannot encode is written escaped (`\\ud800` as six characters), so an
answer that echoes a client's text never becomes a 500.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

__all__ = ["CheckedBody", "SafeJSONResponse", "escaped", "is_json", "lone_surrogate_at", "refuse_lone_surrogates"]

_SURROGATE = re.compile("[\ud800-\udfff]")


def is_json(content_type: str) -> bool:
    """application/json or a +json type: what FastAPI parses as JSON (any other type reaches the model
    as bytes)."""
    kind = content_type.split(";")[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


def escaped(text: str) -> str:
    """`text` with each lone surrogate written out as its escape (`\\ud800`, six characters): text any
    encoder takes, which still shows what was sent."""
    if text.isascii() or _SURROGATE.search(text) is None:
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def lone_surrogate_at(value: Any) -> str | None:
    """Where a parsed JSON value holds a lone surrogate (`filters.video_ids.0`, a key as `metadata.<key>`;
    "the body" for the value itself), or None when it holds none. Walked without recursion: JSON
    nests as deep as the parser allowed."""
    stack: list[tuple[Any, tuple]] = [(value, ())]
    while stack:
        item, at = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and _SURROGATE.search(item) is not None:
                return ".".join(map(str, at)) or "the body"
        elif isinstance(item, dict):
            for key, inner in item.items():
                if not key.isascii() and _SURROGATE.search(key) is not None:
                    return ".".join(map(str, (*at, escaped(key))))
                stack.append((inner, (*at, key)))
        elif isinstance(item, list):
            stack.extend((inner, (*at, i)) for i, inner in enumerate(item))
    return None


def refuse_lone_surrogates(value: Any, prefix: str = "") -> None:
    """HTTPException 422 naming where `value` (a parsed JSON body) holds a lone surrogate."""
    at = lone_surrogate_at(value)
    if at is not None:
        raise HTTPException(422, f"{prefix}{at}: holds a lone UTF-16 surrogate (a \\ud800-\\udfff escape alone), which is "
                                 "not text: send valid Unicode")  # fmt: skip


class CheckedBody(APIRoute):
    """A route whose JSON body is refused (422) when it holds a lone surrogate: a dependency after the
    route's own (its key check), so a request without a key is a 401 whatever its body holds (checked
    before them, a keyless job request with a surrogate got a 422). FastAPI has parsed the body by
    then and keeps it: it is not parsed again. A body FastAPI does not read as JSON (another
    Content-Type: its 415), or cannot parse (its 4xx says why), never gets here."""

    def __init__(self, path: str, endpoint, **kwargs):
        kwargs["dependencies"] = [*(kwargs.get("dependencies") or ()), Depends(_body_holds_text)]
        super().__init__(path, endpoint, **kwargs)


async def _body_holds_text(request: Request) -> None:
    kind = request.headers.get("content-type")
    if (not kind or is_json(kind)) and await request.body():  # FastAPI reads an empty Content-Type as JSON too
        try:
            body = await request.json()
        except (ValueError, RecursionError):  # not JSON, not UTF-8, nested past the parser: FastAPI's 4xx says so
            return
        refuse_lone_surrogates(body)


class SafeJSONResponse(JSONResponse):
    """A JSON answer that renders whatever text it holds: a string a client sent with a lone surrogate,
    echoed in an error's detail, is written escaped (`escaped`) where Starlette's JSONResponse raised."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return super().render(_escape_all(content))


def _escape_all(value: Any) -> Any:
    if isinstance(value, str):
        return escaped(value)
    if isinstance(value, dict):
        return {escaped(k) if isinstance(k, str) else k: _escape_all(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_escape_all(v) for v in value]
    return value
