"""Slow and idle clients cannot hold the server (`server/connections.py`): a request's headers and
body have deadlines that grow with what arrives, answers being written have none, and past the
connection cap the longest-waiting connection makes room. Run against both of uvicorn's HTTP
parsers (h11 and httptools), on a loopback server with short timeouts."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
import uvicorn

from api_fixtures import free_port
from vidsearch.server.connections import guarded_protocol

TIMEOUT = 1.0  # header and body timeouts of the servers here, seconds
SEND_TIMEOUT = 3.0  # how long they wait for a client to take some of an answer


async def app(scope, receive, send):
    """Echoes the body's length (POST) or streams `n` bytes (GET /big?n=...), as a real app would."""
    if scope["type"] != "http":
        return
    if scope["method"] == "POST":
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                app.disconnects += 1
                return
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        body = str(size).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        return
    n = int(scope["query_string"].decode().partition("=")[2] or 2)
    try:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(n).encode())]})
        chunk = b"x" * 65536
        for start in range(0, n, len(chunk)):
            await send({"type": "http.response.body", "body": chunk[: n - start], "more_body": start + len(chunk) < n})
    except RuntimeError:  # a write into a closed transport (uvloop), which the server should have told the app of
        app.send_errors += 1
        raise


app.disconnects = app.send_errors = 0


def _parsers():
    from uvicorn.protocols.http.h11_impl import H11Protocol

    out = [pytest.param(H11Protocol, id="h11")]
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError as exc:  # uvicorn without the [standard] extra
        out.append(pytest.param(None, id="httptools", marks=pytest.mark.skip(reason=f"httptools cannot be imported: {exc}")))
    else:
        out.append(pytest.param(HttpToolsProtocol, id="httptools"))
    return out


def _serve(base, header_timeout: float):
    """A guarded uvicorn on a free loopback port (at most 8 connections); yields the port, stops it at the end."""
    protocol = guarded_protocol(base, header_timeout=header_timeout, body_timeout=TIMEOUT, max_connections=8, send_timeout=SEND_TIMEOUT)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", http=protocol, lifespan="off"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert srv.started
    SERVERS[port] = srv
    yield port
    while OPENED:
        OPENED.pop().close()
    srv.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(params=_parsers())
def server(request):
    yield from _serve(request.param, TIMEOUT)


@pytest.fixture(params=_parsers())
def patient_server(request):
    """As `server`, with a header timeout long enough that only the cap closes idle connections."""
    yield from _serve(request.param, 30.0)


SERVERS: dict[int, uvicorn.Server] = {}  # by port: a test looks at the connections a server holds
OPENED: list[socket.socket] = []  # closed before the test's server stops (uvicorn waits for open connections)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    OPENED.append(sock)
    return sock


def closed_after(sock: socket.socket, limit: float = 10.0) -> float | None:
    """Seconds until the server closed `sock` (reads and drops whatever it sends), None if still open at `limit`."""
    start = time.monotonic()
    sock.settimeout(0.1)
    while time.monotonic() - start < limit:
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - start
        except TimeoutError:
            continue
        except ConnectionResetError:
            return time.monotonic() - start
    return None


def test_unfinished_headers_and_silent_connections_are_closed(server):
    silent, partial = connect(server), connect(server)
    partial.sendall(b"GET /big?n=10 HTTP/1.1\r\nHost: x\r\n")  # never ends its headers
    waited = closed_after(silent)
    assert waited is not None and waited < 1.5 * TIMEOUT, waited  # the timeout itself, not twice it
    waited = closed_after(partial)
    assert waited is not None and waited < 1.5 * TIMEOUT, waited  # 36 bytes buy 0.07 s
    # the server answers others all along
    assert httpx.get(f"http://127.0.0.1:{server}/big?n=5", timeout=5).content == b"xxxxx"


def received_before_close(sock: socket.socket, limit: float = 10.0) -> bytes | None:
    """What the server sent on `sock` before closing it (None: still open at `limit`)."""
    start, got = time.monotonic(), b""
    sock.settimeout(0.1)
    while time.monotonic() - start < limit:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return got
        if chunk == b"":
            return got
        got += chunk
    return None


def test_a_partial_request_gets_a_408_and_a_silent_connection_nothing(server):
    """Connections cut at a deadline were closed with no answer: a client that had sent part of a
    request could not tell a timeout from a crash (Apache answers 408)."""
    silent, partial, short_body = connect(server), connect(server), connect(server)
    partial.sendall(b"GET /big?n=10 HTTP/1.1\r\nHost: x\r\n")
    short_body.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"a" * 10)
    kept = connect(server)  # a second request on a kept-alive connection, cut short
    kept.sendall(b"GET /big?n=3 HTTP/1.1\r\nHost: x\r\n\r\n")
    first = b""
    while not first.endswith(b"xxx"):
        first += kept.recv(65536)
    kept.sendall(b"GET /big?n=4 HTTP/1.1\r\n")
    assert received_before_close(silent) == b""  # an idle keep-alive gets no answer it did not ask for
    for sock in (partial, short_body, kept):
        got = received_before_close(sock)
        assert got is not None and got.startswith(b"HTTP/1.1 408 "), got


def test_headers_trickled_a_byte_at_a_time_are_cut_at_twice_the_timeout(server):
    sock = connect(server)
    start = time.monotonic()
    request = b"GET /big?n=10 HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 200
    sent = 0
    try:
        while sent < len(request) and time.monotonic() - start < 10:
            sock.sendall(request[sent : sent + 1])
            sent += 1
            time.sleep(0.1)  # 10 bytes a second: each byte arrives well within the timeout
    except (BrokenPipeError, ConnectionResetError):
        pass
    waited = closed_after(sock, limit=max(0.5, 10 - (time.monotonic() - start)))
    elapsed = time.monotonic() - start
    assert waited is not None and elapsed < 2 * TIMEOUT + 2, (sent, elapsed)  # not held while bytes keep coming


def test_a_body_that_stops_short_is_dropped_and_the_app_sees_a_disconnect(server):
    before = app.disconnects
    sock = connect(server)
    sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"a" * 10)
    waited = closed_after(sock)
    assert waited is not None and waited < 4 * TIMEOUT, waited
    deadline = time.monotonic() + 5
    while app.disconnects == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert app.disconnects == before + 1  # the app's receive() ended, it was not left waiting


def test_a_large_body_on_a_slow_but_steady_link_passes(server):
    """64 KiB over ~2.5 s (26 KB/s): past the plain timeout, within what its bytes buy."""
    sock = connect(server)
    size = 64 << 10
    sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
    for _ in range(size // 4096):
        sock.sendall(b"b" * 4096)
        time.sleep(2.5 / (size // 4096))
    sock.settimeout(10)
    answer = b""
    while not answer.endswith(str(size).encode()):
        chunk = sock.recv(4096)
        assert chunk, f"closed before the answer: {answer!r}"
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 200")


def test_a_slow_download_is_never_cut(server):
    """An answer the client reads slowly (a long video on a slow link) is the app's turn, not timed:
    32 MB, more than the sockets' buffers hold, read in a trickle for three timeouts, then the rest."""
    size = 32 << 20
    sock = connect(server)
    sock.sendall(b"GET /big?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % size)
    got, start = 0, time.monotonic()
    sock.settimeout(10)
    while time.monotonic() - start < 2 * SEND_TIMEOUT:  # ~1 MB/s: the buffers drain now and then
        chunk = sock.recv(65536)
        assert chunk, "the server closed a download being read"
        got += len(chunk)
        time.sleep(0.05)
    assert got < size // 2  # the server was still writing when the timeouts passed
    while got < size:
        chunk = sock.recv(1 << 20)
        assert chunk, f"the download was cut at {got} of {size} bytes"
        got += len(chunk)


def test_a_download_never_read_is_dropped(server):
    """A client that asks for an answer and takes none of it (its buffers full) is dropped after
    `send_timeout`: such clients held a connection and descriptors each, for ever."""
    sock = connect(server)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(b"GET /big?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % (32 << 20))
    held = SERVERS[server].server_state.connections
    time.sleep(0.5)
    assert len(held) == 1  # the download, stuck
    deadline = time.monotonic() + SEND_TIMEOUT + 3  # reads nothing: dropped after the timeout and a check
    while held and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not held, "the server kept the connection of a client that read none of its answer"


def test_a_download_never_read_with_requests_pipelined_behind_it_is_dropped_quietly(server):
    """uvicorn tells only the newest request of a connection that it was closed: with requests pipelined
    behind a download the client never read, the download went on writing into the dropped connection
    (RuntimeError from uvloop: "Exception in ASGI application" and a traceback per client)."""
    app.send_errors = 0
    sock = connect(server)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(b"GET /big?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % (32 << 20) * 3)
    held = SERVERS[server].server_state.connections
    time.sleep(0.5)
    assert len(held) == 1  # the first download, stuck; the other two wait behind it
    deadline = time.monotonic() + SEND_TIMEOUT + 3
    while held and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not held, "the server kept the connection of a client that read none of its answer"
    time.sleep(0.5)  # the answer's task sees it and ends
    assert app.send_errors == 0


def test_keep_alive_requests_on_one_connection_still_work(server):
    with httpx.Client(base_url=f"http://127.0.0.1:{server}", timeout=5) as http:
        for n in (1, 2, 3):
            assert http.post("/echo", content=b"z" * n).text == str(n)
            time.sleep(0.3)


def test_past_the_cap_the_longest_waiting_connection_makes_room(patient_server):
    server = patient_server
    idle = [connect(server) for _ in range(8)]  # the cap: 8, all waiting for a request
    time.sleep(0.2)
    answer = httpx.get(f"http://127.0.0.1:{server}/big?n=3", timeout=5)  # the 9th: served
    assert answer.content == b"xxx"
    still = [closed_after(s, limit=0.02) for s in idle[1:]]
    assert still == [None] * 7, [s.getsockname()[1] for s in idle]  # the others were not (before their timeout)
    assert closed_after(idle[0], limit=0.5) is not None  # the oldest was closed to make room
    for s in idle:
        s.close()
