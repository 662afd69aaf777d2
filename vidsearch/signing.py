"""Signed media URLs: how a browser reads media and thumbnails from a server that requires a key
for reads (`--read-auth`).

A browser's `<video>` and `<img>` cannot send an `Authorization` header, so whoever holds a key (the
UI's backend, any client) signs the URL instead: `?exp=UNIX_SECONDS&sig=HEX`, where `sig` is
HMAC-SHA256 under the key of `"<video id>:<exp>"`. The server accepts it for that one video's media
and thumbnails until `exp`, if any of its keys gives the same signature. No state is shared or
stored: a key that is removed from the server stops its URLs at once, and a URL names one video and
expires (`TTL_SECONDS`), so one that leaks reveals little.

Expiry is rounded up to `STEP_SECONDS`, so the URLs of a page stay the same for a while and the
browser's cache of thumbnails (the API sends max-age) keeps working across reruns.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Iterable

__all__ = ["STEP_SECONDS", "TTL_SECONDS", "sign_query", "signature", "verify"]

TTL_SECONDS = 3600  # at least this long: a player left paused for a while still seeks
STEP_SECONDS = 600
MAX_TTL_SECONDS = 24 * 3600  # a server refuses URLs that claim to live longer than this


def signature(key: str, video_id: str, exp: int) -> str:
    return hmac.new(key.encode(), f"{video_id}:{exp}".encode(), hashlib.sha256).hexdigest()


def sign_query(key: str, video_id: str, now: float | None = None, ttl: float = TTL_SECONDS) -> str:
    """`exp=...&sig=...` for a URL of this video's media or thumbnails."""
    now = time.time() if now is None else now
    exp = int(math.ceil((now + ttl) / STEP_SECONDS) * STEP_SECONDS)
    return f"exp={exp}&sig={signature(key, video_id, exp)}"


def verify(keys: Iterable[str], video_id: str, exp: str | int, sig: str, now: float | None = None) -> str | None:
    """None when some key signed this video until `exp` and `exp` has not passed; else the reason."""
    now = time.time() if now is None else now
    try:
        exp = int(exp)
    except (TypeError, ValueError):
        return "signed URL: exp is not a time"
    if exp < now:
        return "signed URL has expired: reload the page"
    if exp > now + MAX_TTL_SECONDS + STEP_SECONDS:
        return "signed URL lives too long"
    if not any(hmac.compare_digest(signature(k, video_id, exp), sig) for k in keys if k):  # a blank key signs nothing
        return "signed URL not accepted"
    return None
