"""The server under a flood of clip requests, and the edges of clips and files (p22/server_probe S2,
S8, S9, S11): each test failed on the code before its fix.

- ffmpeg work for clips and thumbnails holds one of a few slots; a request that cannot get one in a
  few seconds is a 503 with Retry-After, and /healthz answers meanwhile (it ran in the same 40
  worker threads as the clips, which held them all);
- an encode whose client has gone is stopped (it ran on for 40 s);
- a 416 says in JSON how long the file is (its body was empty text/plain);
- a clip that starts inside the last frame's interval is that frame (a 404 said the file was damaged);
- /healthz and /readyz answer HEAD; a non-ASCII name has an ASCII `filename=` beside `filename*=`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread
import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from api_fixtures import LiveServer
from vidsearch.server import create_app, media
from vidsearch.server.clips import check_range
from vidsearch.server.files import IndexedFileResponse, content_disposition
from vidsearch.server.library import IndexedFile


@dataclass
class SlowFfmpeg:
    pids: Path  # the pid of each slow run, one a line
    flag: Path  # while it exists, `ffmpeg` is slow; without it, the real one runs

    def started(self) -> list[int]:
        return _pids(self.pids)


@pytest.fixture
def slow_ffmpeg(tmp_path, monkeypatch) -> SlowFfmpeg:
    """`ffmpeg` on PATH is a 20 s sleep (an encode that takes long) that writes its pid down; every one
    still running at the end is stopped. ffprobe stays the real one."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    slow = SlowFfmpeg(tmp_path / "ffmpeg.pids", tmp_path / "slow")
    slow.flag.touch()
    fake = bin_dir / "ffmpeg"
    fake.write_text(f'#!/bin/sh\nif [ -e "{slow.flag}" ]; then echo $$ >> "{slow.pids}"; exec sleep 20; fi\nexec "{shutil.which("ffmpeg")}" "$@"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    yield slow
    for pid in slow.started():
        if _running(pid):
            os.kill(pid, 9)


def _pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def _running(pid: int) -> bool:
    """Whether a process runs (a zombie, dead but not yet reaped by its parent, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _wait_for(check, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def _hd_id(http) -> str:
    return {v["title"]: v["id"] for v in http.get("/v1/videos").json()["videos"]}["The hd clip"]


def _app_with_a_small_pool(settings, threads: int):
    """The app, plus a route that shrinks anyio's worker pool on the server's loop to `threads` (40 by
    default: a flood that fills it takes 40 requests; this takes a handful)."""
    app = create_app(settings)

    async def shrink(request):
        anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        return PlainTextResponse("ok")

    app.router.routes.insert(0, Route("/test-only/shrink-pool", shrink))
    return app


# -- S2: a bounded number of ffmpeg runs, liveness meanwhile --------------------------------------
def test_a_clip_flood_gets_503_with_retry_after_and_healthz_answers(shared_library, slow_ffmpeg, monkeypatch):
    """45 anonymous clip requests for distinct ranges ran 40 encodes at once, in anyio's 40 worker
    threads; /healthz and /v1/videos then waited 5-39 s. Here: one slot, a 1 s wait, a 6-thread pool."""
    settings, _ = shared_library
    monkeypatch.setattr(media, "ffmpeg_slot_count", lambda: 1)
    monkeypatch.setattr(media, "FFMPEG_WAIT", 1.0)
    monkeypatch.setattr(media, "THUMB_WAIT", 1.0)  # (thumbnails wait longer by default: 20 s)
    slow_ffmpeg.flag.unlink()  # the real ffmpeg, for one clip cut first
    with LiveServer(_app_with_a_small_pool(settings, 6)) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        http.get("/test-only/shrink-pool").raise_for_status()
        hd = _hd_id(http)
        cut_before = http.get(f"/v1/videos/{hd}/clip", params={"start": 0, "end": 2})
        assert cut_before.status_code == 200
        slow_ffmpeg.flag.touch()

        answers: dict[str, object] = {}

        def get(name: str, url: str, params: dict, timeout: float = 10) -> None:
            try:
                answers[name] = httpx.get(server.url + url, params=params, timeout=timeout)
            except httpx.HTTPError as exc:
                answers[name] = exc

        holder = threading.Thread(target=get, args=("holder", f"/v1/videos/{hd}/clip", {"start": 1.11, "end": 2.22}, 4))
        holder.start()
        assert _wait_for(lambda: slow_ffmpeg.started(), 10), "the first clip never reached ffmpeg"
        flood = [threading.Thread(target=get, args=(f"clip{i}", f"/v1/videos/{hd}/clip", {"start": 2 + i * 0.37, "end": 4 + i * 0.37}))
                 for i in range(8)]  # fmt: skip
        flood.append(threading.Thread(target=get, args=("thumb", f"/v1/videos/{hd}/thumbnail", {"t": 7.3, "width": 160})))
        for t in flood:
            t.start()
        time.sleep(0.3)  # every request of the flood has arrived
        for method, url in (("GET", "/healthz"), ("HEAD", "/healthz"), ("GET", "/v1/videos?limit=1")):
            t0 = time.monotonic()
            resp = http.request(method, url, timeout=5)
            assert resp.status_code == 200 and time.monotonic() - t0 < 4.0, (method, url, resp.status_code, time.monotonic() - t0)  # (queued behind the flood: no answer in 5 s)
        # a clip cut before needs no slot
        assert http.get(f"/v1/videos/{hd}/clip", params={"start": 0, "end": 2}).status_code == 200
        for t in flood:
            t.join(timeout=15)
        for name in [f"clip{i}" for i in range(8)] + ["thumb"]:
            resp = answers[name]
            assert isinstance(resp, httpx.Response) and resp.status_code == 503, (name, resp)
            assert int(resp.headers["retry-after"]) > 0
            assert "busy cutting clips" in resp.json()["detail"], resp.text
        assert len(slow_ffmpeg.started()) == 1  # one ffmpeg ran, for the request that got the slot
        holder.join(timeout=15)


def test_an_encode_stops_when_its_client_goes(shared_library, slow_ffmpeg, monkeypatch):
    """Encodes ran on for 41 s after every client had given up."""
    settings, _ = shared_library
    with LiveServer(create_app(settings)) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        hd = _hd_id(http)
        with pytest.raises(httpx.ReadTimeout):
            http.get(f"/v1/videos/{hd}/clip", params={"start": 3.33, "end": 5.55}, timeout=1.5)
        assert slow_ffmpeg.started(), "the clip never reached ffmpeg"
        pid = slow_ffmpeg.started()[0]
        assert _wait_for(lambda: not _running(pid), 3.0), "ffmpeg still runs for a client that has gone"
        assert http.head("/healthz").status_code == 200


# -- S8: 416 in JSON ------------------------------------------------------------------------------
def test_416_is_json_with_the_files_length(shared_library):
    settings, clips = shared_library
    with TestClient(create_app(settings)) as client:
        hd = _hd_id(client)
        size = clips["hd"].stat().st_size
        cut = client.get(f"/v1/videos/{hd}/clip", params={"start": 0, "end": 3})
        assert cut.status_code == 200
        for url, params, n in ((f"/v1/videos/{hd}/media", {}, size), (f"/v1/videos/{hd}/clip", {"start": 0, "end": 3}, len(cut.content))):
            resp = client.get(url, params=params, headers={"Range": "bytes=999999999-"})
            assert resp.status_code == 416 and resp.headers["content-range"] == f"bytes */{n}", (url, resp.headers)
            assert resp.headers["content-type"] == "application/json"
            assert resp.json() == {"detail": f"range not satisfiable: the file is {n} bytes"}
            assert client.get(url, params=params, headers={"Range": "bytes=0-9"}).status_code == 206  # ranges inside still work


# -- S9: a clip inside the last frame's interval --------------------------------------------------
def test_a_start_inside_the_last_frames_interval_is_that_frame():
    assert check_range(309.95, 310.0, 310.0, fps=10) == pytest.approx((309.9, 310.0))
    assert check_range(9.97, 10.0, 10.0, fps=25) == pytest.approx((9.96, 10.0))
    assert check_range(9.95, 10.0, 10.0, fps=25) == pytest.approx((9.95, 10.0))  # before the last frame: as asked
    assert check_range(29.99, 30.0, 30.0, fps=30000 / 1001)[0] <= 30.0 - 1001 / 30000  # never past that frame's start


def test_a_clip_of_the_last_frame_is_served(shared_library):
    """`clip?start=309.95&end=310` of a 10 fps video was a 404 saying the file was truncated or
    damaged; a thumbnail at the same time was the last frame."""
    settings, _ = shared_library
    with TestClient(create_app(settings)) as client:
        hd = _hd_id(client)  # 10 s at 25 fps: the last frame starts at 9.96
        resp = client.get(f"/v1/videos/{hd}/clip", params={"start": 9.97, "end": 10})
        assert resp.status_code == 200, resp.text
        assert "9.96-10.00" in resp.headers["content-disposition"]
        out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries", "stream=nb_read_frames",
                              "-of", "csv=p=0", "-"], input=resp.content, capture_output=True, check=True).stdout  # fmt: skip
        assert int(out.strip() or 0) >= 1


# -- S11: HEAD on health checks, an ASCII filename beside filename* --------------------------------
def test_health_checks_answer_head(shared_library):
    settings, _ = shared_library
    with TestClient(create_app(settings)) as client:
        for url in ("/healthz", "/readyz"):
            head = client.head(url)
            assert head.status_code == 200 and head.content == b"", (url, head.status_code)
            assert int(head.headers["content-length"]) == len(client.get(url).content)


def test_content_disposition_has_an_ascii_fallback(tmp_path):
    assert content_disposition("inline", "bars.mp4") == 'inline; filename="bars.mp4"'
    assert content_disposition("inline", "no audio.mp4") == 'inline; filename="no audio.mp4"'
    assert content_disposition("attachment", 'ünï 映画 🎬.mp4') == (
        "attachment; filename=\"_n_ __ _.mp4\"; filename*=utf-8''%C3%BCn%C3%AF%20%E6%98%A0%E7%94%BB%20%F0%9F%8E%AC.mp4")  # fmt: skip
    assert content_disposition("inline", 'q"uo\\te;na%me\r\n.mp4') == (
        "inline; filename=\"q_uo_te_na_me__.mp4\"; filename*=utf-8''q%22uo%5Cte%3Bna%25me%0D%0A.mp4")  # fmt: skip
    video = tmp_path / "v.mp4"
    video.write_bytes(b"\0" * 100)

    def serve(request):
        fd = os.open(video, os.O_RDONLY)
        return IndexedFileResponse(IndexedFile(fd, os.fstat(fd), "ünï 映画 🎬.mp4"), media_type="video/mp4")

    with TestClient(Starlette(routes=[Route("/f", serve)])) as client:
        header = client.get("/f").headers["content-disposition"]
    assert header.startswith('inline; filename="_n_ __ _.mp4"; filename*=utf-8\'\'%C3%BCn'), header
