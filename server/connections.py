"""Connections that cannot hold the server: read deadlines and a cap on open connections.

uvicorn waits for a request's headers and body as long as the client likes: a client that opens
connections and sends a request line a byte at a time, or a Content-Length it never delivers, holds
each connection (a descriptor, a parser, a task) forever, and some thousands of them leave the
server's descriptors exhausted, so every other client is refused (a probe held 20,000). This module
gives uvicorn's own HTTP protocol (httptools or h11, whichever it picked) the policy Apache's
`mod_reqtimeout` ships with:

- the request line and headers must arrive within `header_timeout` seconds, extended by a second for
  every 500 bytes received, up to twice that;
- a body must keep arriving: `body_timeout` seconds from its start, extended by a second for every
  500 bytes, so a large upload on a slow link passes and a trickle of a few bytes does not;
- past `max_connections` open connections, the one that has waited longest for its next request's
  headers (a slow or idle client) is closed to make room; where none is waiting, the new one is.

- an answer the client stops reading (its socket buffers full, nothing taken for `send_timeout`
  seconds: nginx's `send_timeout`) is dropped: a client that starts downloads and never reads them
  held a connection and three descriptors each, for ever. A slow reader is not timed: each time the
  buffers drain the clock starts again.

A connection past its deadline is closed; one that sent part of a request gets a 408 first (a client
that sent nothing, an idle keep-alive, gets no answer it did not ask for). A
response that is being read is never timed: a slow download of a long video is a user, not an
attack; nor is a body the app cannot take yet (reading paused by flow control). A body behind `Expect:
100-continue` is timed from its headers: this API's routes read their body at once. A deployment that faces the internet still belongs behind a
reverse proxy (README: "HTTP API").
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import OrderedDict
from typing import Any

__all__ = ["MIN_RATE", "guarded_protocol", "max_connections_default", "uvicorn_options"]

MIN_RATE = 500.0  # bytes a second that buy one more second of reading (mod_reqtimeout's MinRate)

log = logging.getLogger("vidsearch.server")

_HEADERS, _BODY, _APP = "headers", "body", "app"

# the answer to a request that stopped arriving (as Apache's mod_reqtimeout gives); a connection that
# sent nothing (an idle keep-alive) is closed without one, as browsers expect
_TIMEOUT_BODY = b'{"detail":"the request did not arrive in time; send it again"}'  # JSON, as every other error
REQUEST_TIMEOUT = (b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: application/json\r\n"
                   b"Content-Length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\n\r\n" + _TIMEOUT_BODY)  # fmt: skip


def max_connections_default() -> int:
    """Half the process's open-file limit: the other half stays for the index's tables, media files
    and ffmpeg's pipes, which a flood of connections must not starve."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 65536
    return max(32, soft // 2)


def guarded_protocol(base: type, *, header_timeout: float, body_timeout: float, max_connections: int,
                     send_timeout: float = 60.0) -> type:  # fmt: skip
    """`base` (a uvicorn HTTP protocol class) with the deadlines and the connection cap above."""

    class GuardedHTTP(base):  # type: ignore[misc, valid-type]
        _guard_timer: asyncio.TimerHandle | None = None
        _stuck_since: float | None = None  # when the transport last stopped taking our answer (pause_writing)
        _earlier: tuple = ()  # requests still being answered with newer ones parsed behind them (pipelined)
        # this server's connections waiting for a request's headers, longest-waiting first
        waiting: OrderedDict[GuardedHTTP, None] = OrderedDict()
        shed, shed_logged = 0, float("-inf")  # connections closed over the cap since the last log line

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._phase_key: tuple[str, int] = (self._phase(), id(self.cycle))  # as _note_phase keys it
            self._phase_since, self._phase_bytes = self.loop.time(), 0
            self.waiting[self] = None
            self._arm(header_timeout)
            if len(self.connections) > max_connections:
                self._shed()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._note_phase():
                self._phase_bytes += len(data)

        def on_headers_complete(self) -> None:
            """(httptools: a request's headers parsed; h11 parses none while one is being answered.)"""
            before = self.cycle
            super().on_headers_complete()
            if before is not None and self.cycle is not before and not before.response_complete:  # pipelined behind it
                self._earlier = (*(c for c in self._earlier if not c.response_complete), before)

        def pause_writing(self) -> None:
            super().pause_writing()
            self._stuck_since = self.loop.time()

        def resume_writing(self) -> None:
            super().resume_writing()
            self._stuck_since = None

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._note_phase()

        def connection_lost(self, exc) -> None:
            self.waiting.pop(self, None)
            if self._guard_timer is not None:
                self._guard_timer.cancel()
                self._guard_timer = None
            # uvicorn tells only the newest request it parsed that the client is gone; with requests
            # pipelined behind it, the one being answered wrote on into the closed transport (uvloop:
            # RuntimeError, "Exception in ASGI application" and a traceback per dropped client)
            for cycle in self._earlier:
                if not cycle.response_complete:
                    cycle.disconnected = True
                    cycle.message_event.set()
            super().connection_lost(exc)

        # what the connection waits for
        def _phase(self) -> str:
            cycle = self.cycle
            if cycle is None or cycle.response_complete:
                return _HEADERS
            if cycle.more_body and not cycle.disconnected and not self.flow.read_paused:
                return _BODY
            return _APP

        def _note_phase(self) -> bool:
            """Record the phase; False where it changed (its clock and byte count start again)."""
            key = (self._phase(), id(self.cycle))
            if key == self._phase_key:
                return True
            self._phase_key, self._phase_since, self._phase_bytes = key, self.loop.time(), 0
            if key[0] == _HEADERS:
                self.waiting[self] = None
                self.waiting.move_to_end(self)
            else:
                self.waiting.pop(self, None)
            return False

        def _deadline(self) -> float | None:
            phase = self._phase_key[0]
            grace = self._phase_bytes / MIN_RATE
            if phase == _HEADERS:
                return self._phase_since + min(header_timeout + grace, 2 * header_timeout)
            if phase == _BODY:
                return self._phase_since + body_timeout + grace
            return None

        def _arm(self, delay: float) -> None:
            self._guard_timer = self.loop.call_later(max(delay, 0.05), self._check)

        def _check(self) -> None:
            self._guard_timer = None
            if self.transport.is_closing():
                return
            self._note_phase()
            deadline = self._deadline()
            now = self.loop.time()
            if deadline is None:  # the app's turn (or the client's, reading our answer): look again later
                if self._stuck_since is not None and now - self._stuck_since >= send_timeout:
                    log.info("dropping a connection from %s: it took nothing of its answer for %.0f s", _client(self), now - self._stuck_since)
                    self.transport.abort()  # close() would wait for the buffer to drain: it never does
                    return
                self._arm(min(header_timeout, body_timeout, send_timeout))
            elif now >= deadline:
                log.info("closing a connection from %s: its request's %s did not arrive in time (%d bytes in %.0f s)",
                         _client(self), self._phase_key[0], self._phase_bytes, now - self._phase_since)  # fmt: skip
                # a request was under way (not an idle keep-alive) and no answer to it has begun
                if (self._phase_key[0] == _HEADERS and self._phase_bytes) or (
                        self._phase_key[0] == _BODY and not getattr(self.cycle, "response_started", False)):  # fmt: skip
                    self.transport.write(REQUEST_TIMEOUT)  # a client that sent part of a request learns why
                self.transport.close()
            else:
                self._arm(deadline - now)

        def _shed(self) -> None:
            """Over the cap: close the connection waiting longest for its next request's headers."""
            victim = next((c for c in self.waiting if c is not self and not c.transport.is_closing()), self)
            self.waiting.pop(victim, None)
            victim.transport.close()
            GuardedHTTP.shed += 1
            now = self.loop.time()
            if now - GuardedHTTP.shed_logged >= 10:  # a flood sheds thousands: one line per 10 s
                log.warning("%d connections open (max_connections %d): closed %d waiting for a request (the last from %s)",
                            len(self.connections), max_connections, GuardedHTTP.shed, _client(victim))  # fmt: skip
                GuardedHTTP.shed, GuardedHTTP.shed_logged = 0, now

    GuardedHTTP.__name__ = GuardedHTTP.__qualname__ = f"Guarded{base.__name__}"
    return GuardedHTTP


def _client(protocol) -> str:
    client = getattr(protocol, "client", None)
    return f"{client[0]}:{client[1]}" if client else "an unknown client"


def uvicorn_options(settings) -> dict[str, Any]:
    """Keyword arguments for `uvicorn.run`/`uvicorn.Config`: uvicorn's own HTTP protocol, guarded."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    cap = settings.max_connections or max_connections_default()
    http = guarded_protocol(AutoHTTPProtocol, header_timeout=settings.header_timeout, body_timeout=settings.body_timeout,
                            max_connections=cap, send_timeout=settings.send_timeout)  # fmt: skip
    return {"http": http}
