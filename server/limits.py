"""Request body limits: a body over its limit gets 413 before it is read or parsed (FastAPI's
`max_body_size`: Content-Length checked first, then the bytes counted as a chunked body streams).

A job or a words-only search takes a few kilobytes (`BODY_LIMIT`). A search may carry a picture, as
base64 in the JSON body or as a multipart file, up to `max_image_mb`: the app's limit is that plus
the base64 overhead (`body_limit`), and routes that never take pictures (jobs) keep `BODY_LIMIT`.
"""

from __future__ import annotations

import math

from vidsearch.config import Settings

__all__ = ["BODY_LIMIT", "body_limit"]

BODY_LIMIT = 256 << 10  # bytes: every request without a picture


def body_limit(settings: Settings) -> int:
    """The app-wide limit: `BODY_LIMIT` plus the largest picture a search accepts, base64-encoded."""
    return BODY_LIMIT + math.ceil(settings.max_image_mb * 1e6 * 4 / 3)
