"""The fifth probe of the HTTP server: each test failed on the code before its fix.

- a lone UTF-16 surrogate in a JSON body (a search's filters, the multipart `request` part, a job's
  paths) was a plain-text 500 with a traceback; it is a 422 naming the field, and an error that echoes
  a client's text renders it escaped;
- a burst of thumbnail requests waiting for ffmpeg held anyio's worker threads, and every sync route
  waited behind them;
- HEAD on a clip or a thumbnail made it (a 15 s clip: 0.47 s and a 209 KB file);
- `Range: bytes=--5` was a 416 (a malformed header is ignored), and `bytes=0-10,99999-` a 416 though its
  first range is there;
- HEAD on plain GET routes was a 405, and a 405's `Allow` named one route's methods;
- `/v1/videos/` redirected to the host its request's Host header named;
- a multipart search with the picture twice, a query part of invalid UTF-8, a part over 1 MB, a query
  of zero-width characters, and concurrent deletes of one video were each answered as if all was well;
- a file answer whose connection was dropped under it logged "Exception in ASGI application" and a
  traceback (test_slow_clients.py has the pipelined client that caused it).
"""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi import HTTPException
from fastapi.testclient import TestClient
from starlette.routing import Route

from api_fixtures import API_KEY, LiveServer
from test_server_capacity import _app_with_a_small_pool, _hd_id, _wait_for, slow_ffmpeg  # noqa: F401 - slow_ffmpeg is a fixture
from test_server_hardening import small_library, video_ids  # noqa: F401 - small_library is a fixture
from vidsearch.server import clips, create_app, media
from vidsearch.server.files import IndexedFileResponse
from vidsearch.server.library import PathRefused, check_job_paths

AUTH = {"Authorization": f"Bearer {API_KEY}"}
JSON = {"content-type": "application/json"}


# -- 1: a lone surrogate is a 422 where the body is parsed; errors render what they echo -------------
@pytest.mark.parametrize(
    "body, field",
    [
        ('{"query": "red", "filters": {"video_ids": ["\\ud800"]}}', "filters.video_ids.0"),
        ('{"query": "red", "filters": {"metadata": {"kind": "\\udcff"}}}', "filters.metadata.kind"),
        ('{"query": "red", "filters": {"metadata": {"\\ud800x": 1}}}', "filters.metadata.\\ud800x"),
        ('{"query": "red \\udfff"}', "query"),
        ('{"query": "red", "like": {"video_id": "\\ud800"}}', "like.video_id"),
    ],
)
def test_a_lone_surrogate_in_a_search_is_a_422_naming_the_field(shared_library, body, field):
    settings, _ = shared_library
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        for headers in (JSON, {}, {"content-type": ""}):  # a body without a Content-Type (or an empty one) is read as JSON too
            resp = client.post("/v1/search", content=body.encode(), headers=headers)
            assert resp.status_code == 422, (body, resp.status_code, resp.text)
            assert resp.json()["detail"].startswith(f"{field}: holds a lone UTF-16 surrogate"), resp.text
        multipart = client.post("/v1/search", files={"request": (None, body.encode())})  # a text part
        assert multipart.status_code == 422 and multipart.json()["detail"].startswith(f"request: {field}: "), multipart.text
        as_file = client.post("/v1/search", files={"request": ("req.json", body.encode(), "application/json")})
        assert as_file.status_code == 422 and as_file.json()["detail"].startswith(f"request: {field}: "), as_file.text


def test_a_lone_surrogate_in_a_jobs_paths_is_a_422(shared_library):
    """`\\ud800` reached os.fsencode (UnicodeEncodeError); `\\udcff` under a root reached a 400 whose
    detail echoed it, which the JSON response could not encode: both were 500s."""
    settings, _ = shared_library
    root = str(settings.library_roots[0])
    with TestClient(create_app(settings), headers=AUTH, raise_server_exceptions=False) as client:
        for path in ("/x/\\ud800", f"{root}/\\udcff", f"{root}/a\\udc80b.mp4"):
            resp = client.post("/v1/jobs", content=f'{{"paths": ["{path}"]}}'.encode(), headers=JSON)
            assert resp.status_code == 422 and resp.json()["detail"].startswith("paths.0: holds a lone"), (path, resp.status_code, resp.text)
        resp = client.post("/v1/export", content=b'{"format": "edl", "items": [{"video_id": "\\ud800", "start": 0, "end": 1}]}', headers=JSON)
        assert resp.status_code == 422 and resp.json()["detail"].startswith("items.0.video_id: holds a lone"), resp.text
    with TestClient(create_app(settings), raise_server_exceptions=False) as keyless:  # the key is checked first
        resp = keyless.post("/v1/jobs", content=b'{"paths": ["/x/\\ud800"]}', headers=JSON)
        assert resp.status_code == 401, (resp.status_code, resp.text)
    with pytest.raises(PathRefused) as err:  # the check itself, without the app in front of it
        check_job_paths(["/x/\ud800"], [root])
    assert err.value.status == 422


def test_bodies_and_ranges_past_the_parsers_are_4xx_not_500(shared_library):
    """The review of the checks above: JSON nested past the parser raised RecursionError in the
    surrogate check (a 500, and before the key check on /v1/jobs), and a Range number of 5,000 digits
    met int()'s limit (a 500): a 4xx and an ignored header."""
    settings, _ = shared_library
    deep = ("[" * 200_000 + "]" * 200_000).encode()
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        for url in ("/v1/search", "/v1/export", "/v1/jobs"):
            resp = client.post(url, content=deep, headers=JSON)
            assert 400 <= resp.status_code < 500, (url, resp.status_code, resp.text[:200])
        vid = client.get("/v1/videos").json()["videos"][0]["id"]
        whole = client.get(f"/v1/videos/{vid}/media", headers={"Range": "bytes=" + "9" * 5000 + "-"})
        assert whole.status_code == 200, whole.status_code


def test_an_error_that_echoes_unencodable_text_is_rendered_escaped(shared_library):
    settings, _ = shared_library
    app = create_app(settings)

    async def echo(request):
        raise HTTPException(400, "no video named \udcff\ud800 here")

    app.router.routes.insert(0, Route("/test-only/echo", echo))
    with TestClient(app, raise_server_exceptions=False) as client:
        resp = client.get("/test-only/echo")
    assert resp.status_code == 400 and resp.headers["content-type"] == "application/json", resp.text
    assert resp.json() == {"detail": "no video named \\udcff\\ud800 here"}


# -- 2: thumbnails wait for ffmpeg without holding a worker thread ------------------------------------
def test_a_thumbnail_burst_leaves_sync_routes_answering(shared_library, slow_ffmpeg, monkeypatch):
    """115 distinct thumbnail requests held the pool while they waited for ffmpeg slots: /v1/index
    took 1.75-4.4 s, /v1/videos/{id} 1.9 s. Here: one slot held by a slow ffmpeg, a 3 s wait, a
    6-thread pool and 10 thumbnail requests; sync routes answer at once meanwhile."""
    settings, _ = shared_library
    monkeypatch.setattr(media, "ffmpeg_slot_count", lambda: 1)
    monkeypatch.setattr(media, "THUMB_WAIT", 3.0)
    with LiveServer(_app_with_a_small_pool(settings, 6)) as server, httpx.Client(base_url=server.url, timeout=15) as http:
        http.get("/test-only/shrink-pool").raise_for_status()
        hd = _hd_id(http)
        codes: list = []

        def thumb(i: int) -> None:
            try:
                codes.append(httpx.get(f"{server.url}/v1/videos/{hd}/thumbnail", params={"t": 0.3 + i * 0.7, "width": 1280}, timeout=30).status_code)
            except httpx.HTTPError as exc:
                codes.append(exc)

        burst = [threading.Thread(target=thumb, args=(i,)) for i in range(10)]
        for t in burst:
            t.start()
        assert _wait_for(lambda: slow_ffmpeg.started(), 10), "no thumbnail reached ffmpeg"
        time.sleep(0.3)  # the others wait for the slot
        for url in ("/v1/index", f"/v1/videos/{hd}", "/v1/videos?limit=1"):
            t0 = time.monotonic()
            resp = http.get(url)
            took = time.monotonic() - t0
            assert resp.status_code == 200 and took < 1.5, (url, resp.status_code, took)  # before: behind the 3 s waits
        slow_ffmpeg.flag.unlink()  # the real ffmpeg from now on, and the slow one ends: its request finishes
        for pid in slow_ffmpeg.started():
            os.kill(pid, 9)
        for t in burst:
            t.join(timeout=30)
        assert len(codes) == 10 and set(codes) <= {200, 404, 503}, codes  # (404: the cut killed; 503: a wait past 3 s)


@pytest.mark.parametrize("same", [("thumbnail", {"t": 4.2, "width": 640}), ("clip", {"start": 4.17, "end": 5.93})])
def test_requests_for_one_cut_wait_for_it_without_holding_slots(shared_library, slow_ffmpeg, monkeypatch, same):
    """Each of several requests for one thumbnail (or clip) took an ffmpeg slot and then waited on the
    cut's file lock, so a clip behind them found no slot (503): they now wait for the one cut, slotless."""
    settings, _ = shared_library
    monkeypatch.setattr(media, "ffmpeg_slot_count", lambda: 2)
    monkeypatch.setattr(media, "FFMPEG_WAIT", 1.5)
    with LiveServer(create_app(settings)) as server, httpx.Client(base_url=server.url, timeout=15) as http:
        hd = _hd_id(http)
        answers: dict = {}

        def get(name: str, url: str, params: dict) -> None:
            try:
                answers[name] = httpx.get(server.url + url, params=params, timeout=30).status_code
            except httpx.HTTPError as exc:
                answers[name] = exc

        route, params = same
        same = [threading.Thread(target=get, args=(f"same{i}", f"/v1/videos/{hd}/{route}", params)) for i in range(4)]
        for t in same:
            t.start()
        assert _wait_for(lambda: len(slow_ffmpeg.started()) == 1, 10), "the first cut never reached ffmpeg"
        time.sleep(0.5)  # the other three are waiting
        clip = threading.Thread(target=get, args=("clip", f"/v1/videos/{hd}/clip", {"start": 1.37, "end": 2.91}))
        clip.start()
        assert _wait_for(lambda: len(slow_ffmpeg.started()) == 2, 1.2), "the clip found no free slot"
        slow_ffmpeg.flag.unlink()
        for pid in slow_ffmpeg.started():
            os.kill(pid, 9)
        for t in [*same, clip]:
            t.join(timeout=30)
        assert len(slow_ffmpeg.started()) == 2  # one cut for the four requests (and one for the other clip)


# -- 3: HEAD on clips and thumbnails never makes them ------------------------------------------------
def test_head_on_a_clip_or_thumbnail_answers_from_the_cache_and_makes_nothing(shared_library, monkeypatch):
    settings, _ = shared_library
    runs = []
    for module in (media, clips):
        real = module.run_tool
        monkeypatch.setattr(module, "run_tool", lambda cmd, *a, real=real, **k: runs.append(cmd[0]) or real(cmd, *a, **k))
    with TestClient(create_app(settings)) as client:
        hd = _hd_id(client)
        cache = set(os.listdir(client.app.state.vidsearch.thumbs))
        for url, params, kind in ((f"/v1/videos/{hd}/clip", {"start": 0.37, "end": 8.91}, "video/mp4"),
                                  (f"/v1/videos/{hd}/thumbnail", {"t": 4.7, "width": 1280}, "image/jpeg")):  # fmt: skip
            head = client.head(url, params=params)
            assert head.status_code == 200 and head.content == b"" and head.headers["content-type"] == kind, (url, head.headers)
            assert "content-length" not in head.headers and "etag" not in head.headers, head.headers  # not known until made
            assert runs == [] and set(os.listdir(client.app.state.vidsearch.thumbs)) == cache, (url, runs)
            got = client.get(url, params=params)
            assert got.status_code == 200 and runs, url
            runs.clear()
            head = client.head(url, params=params)  # made now: answered from the cache, with its length
            assert head.status_code == 200 and head.content == b"" and runs == []
            assert int(head.headers["content-length"]) == len(got.content) and head.headers["etag"] == got.headers["etag"]
            cache = set(os.listdir(client.app.state.vidsearch.thumbs))
        assert client.head(f"/v1/videos/{hd}/clip", params={"start": 9, "end": 99}).status_code == 400  # still checked
        assert client.head(f"/v1/videos/{hd}/thumbnail", params={"t": 99}).status_code == 400


def test_head_of_a_clip_says_its_type_only_where_the_cut_does_not_decide_it():
    assert clips.uncut_media_type(".MP4") == clips.uncut_media_type(".avi") == "video/mp4"
    assert clips.uncut_media_type(".mkv") is None and clips.uncut_media_type(".mov") is None


# -- 4: Range: malformed is ignored, 416 only when nothing is there ------------------------------------
@pytest.mark.parametrize(
    "header, ranges",
    [
        ("bytes=--5", []), ("bytes=1_0-20", []), ("bytes=+1-2", []), ("bytes=5-2", []), ("bytes=abc", []), ("items=0-1", []),
        ("bytes=0-10,99999-", [(0, 11)]), ("bytes=99999-,-10", [(990, 1000)]), ("bytes=0-10, 5-20", [(0, 21)]),
        ("bytes=0-1,4-5", [(0, 2), (4, 6)]), ("bytes=-5000", [(0, 1000)]), ("bytes=990-5000", [(990, 1000)]), ("bytes=0-0,,", [(0, 1)]),
        ("bytes=99999-", None), ("bytes=1000-", None), ("bytes=-0", None), ("bytes=-0,2000-", None),
    ],
)  # fmt: skip
def test_ranges_by_rfc_9110(header, ranges):
    from starlette.responses import RangeNotSatisfiable

    if ranges is None:
        with pytest.raises(RangeNotSatisfiable):
            IndexedFileResponse._parse_range_header(header, 1000)
    else:
        assert IndexedFileResponse._parse_range_header(header, 1000) == ranges


def test_media_ignores_a_malformed_range_and_sends_the_satisfiable_ones(shared_library):
    settings, lib = shared_library
    data = lib["hd"].read_bytes()
    with TestClient(create_app(settings)) as client:
        url = f"/v1/videos/{_hd_id(client)}/media"
        whole = client.get(url, headers={"Range": "bytes=--5"})
        assert whole.status_code == 200 and whole.content == data
        part = client.get(url, headers={"Range": "bytes=0-10,99999999-"})
        assert part.status_code == 206 and part.content == data[:11] and part.headers["content-range"] == f"bytes 0-10/{len(data)}"
        assert client.get(url, headers={"Range": "bytes=99999999-"}).status_code == 416


# -- 5: HEAD wherever GET; a 405 lists every method -------------------------------------------------
def test_every_get_route_answers_head_and_405_lists_every_method(shared_library):
    settings, lib = shared_library
    with TestClient(create_app(settings)) as client:
        hd = _hd_id(client)
        for url in ("/v1/videos", f"/v1/videos/{hd}", "/v1/index", "/metrics", "/healthz", "/readyz", "/openapi.json"):
            get, head = client.get(url), client.head(url)
            assert head.status_code == 200 and head.content == b"", (url, head.status_code)
            assert head.headers["content-type"] == get.headers["content-type"], url
            if url != "/metrics":  # (its counters moved with the GET)
                assert int(head.headers["content-length"]) == len(get.content), url
        assert client.head(f"/v1/videos/{hd}/media").headers["content-length"] == str(lib["hd"].stat().st_size)  # its own HEAD
        assert client.head("/v1/videos/nope").status_code == 404
        resp = client.put(f"/v1/videos/{hd}")
        assert resp.status_code == 405 and resp.headers["allow"] == "GET, HEAD, DELETE", resp.headers  # was `GET`
        assert client.head("/v1/search").headers["allow"] == "POST"
        assert client.post("/healthz").headers["allow"] == "GET, HEAD"
        metrics = client.get("/metrics").text
        assert 'method="HEAD",route="/v1/index",status="200"' in metrics  # HEAD is counted as HEAD, under its route


# -- 6: no redirect to the Host header's host ------------------------------------------------------
def test_a_trailing_slash_is_a_404_not_a_redirect_to_the_host_header(shared_library):
    settings, _ = shared_library
    with TestClient(create_app(settings)) as client:
        for url in ("/v1/videos/", "/v1/index/", "/healthz/"):
            resp = client.get(url, headers={"Host": "evil.example"}, follow_redirects=False)
            assert resp.status_code == 404 and "location" not in resp.headers, (url, resp.status_code, resp.headers)


# -- 7: the smaller ones -----------------------------------------------------------------------------
def test_multipart_search_refuses_what_it_used_to_guess(shared_library, tmp_path):
    settings, _ = shared_library
    picture = tmp_path / "p.jpg"
    with TestClient(create_app(settings)) as client:
        hd = _hd_id(client)
        picture.write_bytes(client.get(f"/v1/videos/{hd}/thumbnail", params={"t": 1}).content)
        image = ("p.jpg", picture.read_bytes(), "image/jpeg")
        # the picture both as the file part and in `request`: the file silently won
        resp = client.post("/v1/search", files={"image": image, "request": (None, json.dumps({"image": "aGVsbG8=", "top_k": 1}).encode())})
        assert resp.status_code == 422 and "image: given both" in resp.json()["detail"], resp.text
        assert client.post("/v1/search", files={"image": image, "request": (None, b'{"top_k": 1}')}).status_code == 200
        # a query of invalid UTF-8 was read as Latin-1 ("cafÃ©" for a Latin-1 "café") and searched
        for name, part in (("query", b"caf\xe9"), ("request", b'{"query": "caf\xe9"}')):
            resp = client.post("/v1/search", files={name: (None, part)})
            assert resp.status_code == 422 and resp.json()["detail"].startswith(f"{name}: not utf-8 text"), resp.text
        assert client.post("/v1/search", files={"query": (None, "café".encode())}).status_code == 200
        # a text part over the parser's 1 MB was a 400
        resp = client.post("/v1/search", files={"query": (None, b"a" * (1 << 20 | 1))})
        assert resp.status_code == 413 and "over 1 MB" in resp.json()["detail"], resp.text


@pytest.mark.parametrize("query", ["\u200b", " \u200b\u200c\u200d\ufeff ", "\u2060\u200e", "\x00\t"])
def test_a_query_of_only_zero_width_characters_is_refused(shared_library, query):
    settings, _ = shared_library
    with TestClient(create_app(settings)) as client:
        resp = client.post("/v1/search", json={"query": query})
        assert resp.status_code == 422 and resp.json()["detail"] == "query must contain at least one non-space character", resp.text
        assert client.post("/v1/search", files={"query": (None, query.encode())}).status_code == 422
        assert client.post("/v1/search", json={"query": f"red{query}"}).status_code == 200


def test_concurrent_deletes_of_one_video_remove_it_once(small_library):
    """Four concurrent DELETEs of one video all said 200, three of them with `removed: 0`."""
    settings, _ = small_library
    with LiveServer(create_app(settings)) as server, httpx.Client(base_url=server.url, timeout=60, headers=AUTH) as http:
        vid = video_ids(http)["victim"]
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: http.delete(f"/v1/videos/{vid}"), range(4)))
        codes = sorted(r.status_code for r in answers)
        assert codes == [200, 404, 404, 404], [(r.status_code, r.text) for r in answers]
        assert next(r for r in answers if r.status_code == 200).json() == {"deleted": vid, "removed": 1}
        assert all("no indexed video" in r.json()["detail"] for r in answers if r.status_code == 404)
        assert http.delete(f"/v1/videos/{vid}").status_code == 404


# -- 8: an answer whose connection was dropped under it ends quietly -----------------------------------
def test_a_file_answer_into_a_closed_transport_logs_one_line(tmp_path, caplog):
    """uvloop refuses a write to a closed transport with a RuntimeError, which reached uvicorn as
    "Exception in ASGI application" and a traceback (a pipelined slow client dropped by send_timeout)."""
    import asyncio
    import logging

    from vidsearch.server.library import IndexedFile

    video = tmp_path / "v.mp4"
    video.write_bytes(b"\0" * 300_000)
    fd = os.open(video, os.O_RDONLY)
    response = IndexedFileResponse(IndexedFile(fd, os.fstat(fd), "v.mp4"), media_type="video/mp4")
    sent = []

    async def send(message):
        if message["type"] == "http.response.body" and sent:
            raise RuntimeError("unable to perform operation on <TCPTransport closed=True reading=False 0x5>; the handler is closed")
        sent.append(message)

    async def receive():
        await asyncio.sleep(10)

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "client": ("10.0.0.7", 5555), "asgi": {"spec_version": "2.4"}}
    with caplog.at_level(logging.INFO, logger="vidsearch.server"):
        asyncio.run(response(scope, receive, send))
    assert [r.getMessage() for r in caplog.records] == ["stopped sending v.mp4 to 10.0.0.7:5555: the connection was closed"]
    with pytest.raises(OSError):
        os.fstat(fd)  # the file was closed

    async def other(message):  # any other RuntimeError is still an error
        raise RuntimeError("Response content longer than Content-Length")

    fd = os.open(video, os.O_RDONLY)
    with pytest.raises(RuntimeError, match="longer"):
        asyncio.run(IndexedFileResponse(IndexedFile(fd, os.fstat(fd), "v.mp4"), media_type="video/mp4")(scope, receive, other))
