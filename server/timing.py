"""Request latency into the server's Prometheus histogram, as a plain ASGI middleware.

Why not `@app.middleware("http")`: Starlette's BaseHTTPMiddleware runs every request through an
extra task group and a memory stream for the response body; under bench/api_load.py that wrapper
was a fifth of the event loop's work. This one only watches the status go by and times the call.
"""

from __future__ import annotations

import time

__all__ = ["LatencyMetrics"]


class LatencyMetrics:
    """Observes each HTTP request's seconds under its route template (`/v1/videos/{video_id}`, not the
    id: bounded labels), method and status; a request that raised counts as a 500."""

    def __init__(self, app, histogram):
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def watch(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")  # set by the router on this scope
            self.histogram.labels(path, scope["method"], str(status)).observe(time.perf_counter() - t0)
