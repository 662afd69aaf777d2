"""A server that serves only what it indexed, only to whom it should, and never hangs (issue 18).

Each test is one finding of a probe of `vidsearch serve`, and failed on the code before the fix:
media that followed a file swapped for a symbolic link, jobs that indexed any server path, jobs that
could not be stopped, records of a live server's jobs marked failed by a second server, request
bodies parsed whatever their size, thumbnails that raced and grew without bound, and HTTP details
(HEAD, 304, a malformed Range).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from api_fixtures import API_KEY, LiveServer
from media import make_clip
from vidsearch.api_models import JobInfo
from vidsearch.config import load_settings
from vidsearch.indexer.pipeline import IndexRun, open_store_for
from vidsearch.server import create_app
from vidsearch.server.library import IndexedFile
from vidsearch.server.media import thumbnail

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def settings_for(root: Path, **extra):
    return load_settings(None, db=root / "db", model="tiny", pretrained="none", api_keys=[API_KEY], refresh_seconds=0.2,
                         speech=False, ocr=False, library_roots=[root / "lib"], **extra)  # fmt: skip


@pytest.fixture
def small_library(tmp_path, tiny_backbone):
    """Two indexed clips under the library root `tmp_path/lib`, in an index of their own (tests here
    swap and delete files)."""
    lib = tmp_path / "lib"
    clips = {name: make_clip(lib / f"{name}.mp4", seconds=3, source=src, audio_hz=None) for name, src in (("victim", "testsrc"), ("keep", "smptebars"))}
    settings = settings_for(tmp_path)
    IndexRun(open_store_for(settings, tiny_backbone), tiny_backbone, settings).run([lib])
    return settings, clips


def video_ids(client) -> dict[str, str]:
    return {Path(v["uri"]).stem: v["id"] for v in client.get("/v1/videos").json()["videos"]}


def wait_job(client, job_id: str, timeout: float = 120.0, until=("succeeded", "failed", "cancelled")) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}", headers=AUTH).json()
        if job["state"] in until or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


# -- serve only what was indexed --------------------------------------------------------------------
def test_media_of_a_file_swapped_for_a_symlink_is_refused_not_followed(small_library):
    settings, clips = small_library
    with TestClient(create_app(settings)) as client:
        ids = video_ids(client)
        assert client.get(f"/v1/videos/{ids['victim']}/media").status_code == 200
        secret = Path("/etc/passwd").read_bytes()
        clips["victim"].unlink()
        clips["victim"].symlink_to("/etc/passwd")
        for url in (f"/v1/videos/{ids['victim']}/media", f"/v1/videos/{ids['victim']}/thumbnail?t=1"):
            resp = client.get(url)
            assert resp.status_code == 403, (url, resp.status_code)  # it leads outside the library roots
            assert "library roots" in resp.json()["detail"] and secret[:64] not in resp.content
        # a link to another file inside the root: not the file that was indexed
        clips["victim"].unlink()
        clips["victim"].symlink_to(clips["keep"])
        for url in (f"/v1/videos/{ids['victim']}/media", f"/v1/videos/{ids['victim']}/thumbnail?t=1"):
            resp = client.get(url)
            assert resp.status_code == 409 and "reindex" in resp.json()["detail"], (url, resp.status_code)
        # the same name now holding other bytes (another video) is not served either
        clips["victim"].unlink()
        shutil.copy(clips["keep"], clips["victim"])
        assert client.get(f"/v1/videos/{ids['victim']}/media").status_code == 409
        # the untouched video still plays
        assert client.get(f"/v1/videos/{ids['keep']}/media").content == clips["keep"].read_bytes()


def test_media_is_served_only_from_under_a_library_root(small_library):
    settings, clips = small_library
    narrowed = settings.model_copy(update={"library_roots": [clips["keep"].parent / "elsewhere"]})
    with TestClient(create_app(narrowed)) as client:
        ids = video_ids(client)
        resp = client.get(f"/v1/videos/{ids['keep']}/media")
        assert resp.status_code == 403 and "library roots" in resp.json()["detail"]


def test_job_paths_must_lie_under_a_library_root(tmp_path, small_library):
    settings, clips = small_library
    lib = clips["keep"].parent
    (lib / "escape").symlink_to("/etc")
    with TestClient(create_app(settings), headers=AUTH) as client:
        cases = {
            "": 422, ".": 422, "media": 422, "-rebuild": 422, "--rebuild": 422,  # empty or relative
            "/etc": 403, "/root": 403, "/proc/self": 403, "/dev/zero": 403, str(tmp_path): 403, str(lib / "escape"): 403,
            str(lib / ".." / "db"): 403, "/" + "x" * 300: 422, str(lib / ("y" * 300)): 422,  # long names: 4xx, not 500
            str(lib / "missing"): 400,
        }  # fmt: skip
        for path, code in cases.items():
            resp = client.post("/v1/jobs", json={"paths": [path]})
            assert resp.status_code == code, (path[:40], resp.status_code, resp.text)
            assert resp.json()["detail"]
        assert client.get("/v1/jobs").json() == []  # nothing was queued
    unrooted = settings.model_copy(update={"library_roots": []})
    with TestClient(create_app(unrooted), headers=AUTH) as client:
        resp = client.post("/v1/jobs", json={"paths": [str(lib)]})
        assert resp.status_code == 403 and "library roots" in resp.json()["detail"]


def test_a_folder_named_like_an_option_is_indexed_as_a_folder(tmp_path, small_library):
    settings, clips = small_library
    odd = clips["keep"].parent / "--rebuild"
    make_clip(odd / "new.mp4", seconds=2, source="rgbtestsrc", audio_hz=None)
    with TestClient(create_app(settings), headers=AUTH) as client:
        job = client.post("/v1/jobs", json={"paths": [str(odd)]}).json()
        done = wait_job(client, job["id"])
        assert done["state"] == "succeeded", done
        assert done["summary"]["indexed"] == 1
        assert set(video_ids(client)) == {"victim", "keep", "new"}  # nothing was wiped


# -- jobs that end ----------------------------------------------------------------------------------
@pytest.fixture
def long_clip(tmp_path):
    return make_clip(tmp_path / "lib" / "long" / "long.mp4", seconds=60, size="320x240", source="testsrc2", audio_hz=None)


def test_a_running_job_can_be_cancelled_and_a_queued_one_never_runs(small_library, long_clip):
    settings, clips = small_library
    dense = settings.model_copy(update={"sample_fps": 30.0})
    with TestClient(create_app(dense), headers=AUTH) as client:
        first = client.post("/v1/jobs", json={"paths": [str(long_clip.parent)]}).json()
        second = client.post("/v1/jobs", json={"paths": [str(long_clip.parent)]}).json()
        assert wait_job(client, first["id"], until=("running",))["state"] == "running"
        assert client.delete(f"/v1/jobs/{second['id']}").json()["state"] == "cancelled"
        t0 = time.monotonic()
        assert client.delete(f"/v1/jobs/{first['id']}").status_code == 200
        done = wait_job(client, first["id"], timeout=30)
        assert done["state"] == "cancelled" and "cancelled" in done["error"], done
        assert time.monotonic() - t0 < 15
        assert done["progress"]["done"] == 0  # stopped inside the video, not after it
        # the write lock is free again: a delete does not get 409
        assert client.delete(f"/v1/videos/{video_ids(client)['victim']}").status_code == 200
        time.sleep(1.0)  # the runner moves on to the cancelled job and must skip it
        assert client.get(f"/v1/jobs/{second['id']}").json()["state"] == "cancelled"
        assert client.delete("/v1/jobs/nope").status_code == 404


def test_a_job_without_progress_is_stopped(small_library, long_clip):
    settings, _ = small_library
    impatient = settings.model_copy(update={"job_stall_seconds": 0.2})
    with TestClient(create_app(impatient), headers=AUTH) as client:
        job = client.post("/v1/jobs", json={"paths": [str(long_clip.parent)]}).json()
        done = wait_job(client, job["id"], timeout=60)
        assert done["state"] == "failed" and "no progress" in done["error"], done


def test_a_second_server_leaves_the_first_ones_running_job_alone(small_library, long_clip):
    settings, _ = small_library
    dense = settings.model_copy(update={"sample_fps": 30.0})
    with TestClient(create_app(dense), headers=AUTH) as first:
        job = first.post("/v1/jobs", json={"paths": [str(long_clip.parent)]}).json()
        assert wait_job(first, job["id"], until=("running",))["state"] == "running"
        with TestClient(create_app(dense), headers=AUTH) as second:  # same index, same host, its owner alive
            assert second.get(f"/v1/jobs/{job['id']}").json()["state"] == "running"
        first.delete(f"/v1/jobs/{job['id']}")
        wait_job(first, job["id"], timeout=30)


def test_jobs_whose_server_is_gone_are_marked_failed(small_library):
    settings, _ = small_library
    gone = subprocess.Popen(["true"])
    gone.wait()
    jobs = Path(settings.db) / ".jobs"
    jobs.mkdir(exist_ok=True)
    record = JobInfo(id="abandoned", kind="index", paths=["/x"], state="running", created_at=time.time()).model_dump(mode="json")
    (jobs / "abandoned.json").write_text(json.dumps({**record, "_owner": {"host": os.uname().nodename, "pid": gone.pid, "start": 1}}))
    with TestClient(create_app(settings), headers=AUTH) as client:
        job = client.get("/v1/jobs/abandoned").json()
        assert job["state"] == "failed" and "stopped before" in job["error"]


# -- limits ----------------------------------------------------------------------------------------
def test_large_bodies_get_413_before_they_are_parsed(shared_library):
    settings, _ = shared_library
    big = json.dumps({"query": "x" * (8 << 20)}).encode()  # past what a job takes
    huge = json.dumps({"query": "x" * (32 << 20)}).encode()  # past what a search with a 10 MB picture takes
    with LiveServer(create_app(settings)) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        t0 = time.monotonic()
        resp = http.post("/v1/search", content=huge, headers={"content-type": "application/json"})
        assert resp.status_code == 413, resp.text[:200]
        # in JSON, as every other error, saying what the limits are (it was Starlette's plain text)
        assert "a job takes up to 256 KB, any other request up to 13.6 MB (room for a base64 picture of 10 MB" in resp.json()["detail"]

        def chunks():  # no Content-Length: counted as it streams
            for i in range(0, len(huge), 1 << 16):
                yield huge[i : i + (1 << 16)]

        resp = http.post("/v1/search", content=chunks(), headers={"content-type": "application/json"})
        assert resp.status_code == 413 and "too large" in resp.json()["detail"]
        resp = http.post("/v1/jobs", content=big, headers={**AUTH, "content-type": "application/json"})
        assert resp.status_code == 413 and "too large" in resp.json()["detail"]
        assert time.monotonic() - t0 < 10
        assert http.post("/v1/search", json={"query": "colour bars"}).status_code == 200


def test_concurrent_requests_for_one_new_thumbnail_all_get_it(small_library):
    settings, _ = small_library
    with LiveServer(create_app(settings)) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        vid = video_ids(http)["keep"]
        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(lambda _: http.get(f"/v1/videos/{vid}/thumbnail", params={"t": 1.3, "width": 300}).status_code, range(32)))
        assert codes == [200] * 32
        thumbs = Path(settings.db) / ".thumbs"
        assert not list(thumbs.glob("*.tmp*"))
        # widths snap to a fixed set and times round to 0.1 s: these are one cached file, not four
        before = set(thumbs.iterdir())
        for t, w in ((1.31, 300), (1.29, 310), (1.3, 320), (1.34, 200)):
            assert http.get(f"/v1/videos/{vid}/thumbnail", params={"t": t, "width": w}).status_code == 200
        assert set(thumbs.iterdir()) == before
        # a time inside the last frame's interval still finds the last frame
        duration = http.get(f"/v1/videos/{vid}").json()["duration"]
        assert http.get(f"/v1/videos/{vid}/thumbnail", params={"t": duration - 0.001}).status_code == 200


def test_the_thumbnail_cache_stays_under_its_bound(small_library, tmp_path):
    _, clips = small_library
    cache = tmp_path / "thumbs"
    cache.mkdir()
    fd = os.open(clips["keep"], os.O_RDONLY)
    with IndexedFile(fd, os.fstat(fd), "keep.mp4") as f:
        one = len(thumbnail(f, "v", 0.0, 320, cache))
        for i in range(1, 8):
            assert thumbnail(f, "v", i * 0.3, 320, cache, cache_bytes=3 * one)
    assert sum(p.stat().st_size for p in cache.iterdir()) <= 3 * one
    assert 1 <= len(list(cache.iterdir())) <= 3


def test_clips_and_thumbnails_share_the_cache_bound(small_library, tmp_path):
    """Clips were written beside the thumbnails and counted nowhere: ranges a millisecond apart filled
    the disk. Both now count; the least recently used go first, the one just made stays."""
    from vidsearch.server.clips import cut_clip

    _, clips = small_library
    cache = tmp_path / "cache"
    cache.mkdir()
    fd = os.open(clips["keep"], os.O_RDONLY)
    with IndexedFile(fd, os.fstat(fd), "keep.mp4") as f:
        thumbnail(f, "v", 0.0, 320, cache)
        first = cut_clip(f.proc_path, "v", 0.5, 2.5, cache, suffix=".mp4", pass_fds=(f.fd,))
        one = first.path.stat().st_size
        bound = int(2.5 * one)
        made = [cut_clip(f.proc_path, "v", 0.5 + k / 10, 2.5, cache, suffix=".mp4", pass_fds=(f.fd,), cache_bytes=bound)
                for k in range(1, 6)]  # fmt: skip
    files = list(cache.iterdir())
    assert sum(p.stat().st_size for p in files) <= bound
    assert made[-1].path.is_file() and not first.path.exists()  # the newest stays, the oldest went
    assert not any(p.suffix == ".jpg" for p in files)  # the thumbnail was older than every clip


def test_concurrent_requests_for_one_new_clip_cut_it_once(small_library, tmp_path, monkeypatch):
    """Ten requests for one new clip ran ten encodes (each five times slower than one alone)."""
    from vidsearch.server import clips as clips_module

    _, clips = small_library
    runs = []
    real = clips_module._run_ffmpeg

    def counted(*args, **kwargs):
        runs.append(1)
        time.sleep(0.3)  # long enough for every request to arrive while the first cuts
        return real(*args, **kwargs)

    monkeypatch.setattr(clips_module, "_run_ffmpeg", counted)
    cache = tmp_path / "cache"
    cache.mkdir()
    fd = os.open(clips["keep"], os.O_RDONLY)
    with IndexedFile(fd, os.fstat(fd), "keep.mp4") as f, ThreadPoolExecutor(8) as pool:
        cut = lambda _: clips_module.cut_clip(f.proc_path, "v", 0.5, 2.5, cache, suffix=".mp4", pass_fds=(f.fd,))  # noqa: E731
        paths = {c.path for c in pool.map(cut, range(8))}
    assert len(paths) == 1 and len(runs) == 1


# -- HTTP details ----------------------------------------------------------------------------------
def test_media_answers_head_etags_and_ignores_a_malformed_range(shared_library):
    settings, clips = shared_library
    with TestClient(create_app(settings)) as client:
        vid = {v["title"]: v["id"] for v in client.get("/v1/videos").json()["videos"]}["The bars clip"]
        url = f"/v1/videos/{vid}/media"
        size = clips["bars"].stat().st_size
        head = client.head(url)
        assert head.status_code == 200 and int(head.headers["content-length"]) == size and head.content == b""
        etag = head.headers["etag"]
        assert client.get(url, headers={"If-None-Match": etag}).status_code == 304
        assert client.get(url, headers={"If-None-Match": '"other"'}).status_code == 200
        for bad in ("bytes=abc", "items=0-1", "bytes", "bytes=5-2"):
            resp = client.get(url, headers={"Range": bad})
            assert resp.status_code == 200 and len(resp.content) == size, bad
        part = client.get(url, headers={"Range": "bytes=0-99"})
        assert part.status_code == 206 and part.content == clips["bars"].read_bytes()[:100]


def test_a_cursor_is_tied_to_the_index_version_it_was_made_on(small_library):
    settings, _ = small_library
    with TestClient(create_app(settings), headers=AUTH) as client:
        first = client.post("/v1/search", json={"query": "a clip", "top_k": 1}).json()
        assert first["next_cursor"]
        assert client.post("/v1/search", json={"query": "a clip", "top_k": 1, "cursor": first["next_cursor"]}).status_code == 200
        assert client.delete(f"/v1/videos/{first['results'][0]['video']['id']}").status_code == 200
        deadline = time.monotonic() + 30
        while client.get("/readyz").json()["index_version"] == first["index_version"] and time.monotonic() < deadline:
            time.sleep(0.1)
        stale = client.post("/v1/search", json={"query": "a clip", "top_k": 1, "cursor": first["next_cursor"]})
        assert stale.status_code == 400 and "index changed" in stale.json()["detail"]


def test_min_score_applies_before_paging(shared_library):
    settings, _ = shared_library
    with TestClient(create_app(settings)) as client:
        everything = client.post("/v1/search", json={"query": "colour bars", "top_k": 10}).json()["results"]
        assert len(everything) == 4
        cut = everything[1]["score"] - 1e-6  # scores are shown rounded to 6 digits
        pages, body = [], {"query": "colour bars", "top_k": 1, "min_score": cut}
        while True:
            page = client.post("/v1/search", json=body).json()
            pages.append([r["video"]["id"] for r in page["results"]])
            if not page["next_cursor"]:
                break
            body["cursor"] = page["next_cursor"]
        kept = [r["video"]["id"] for r in everything if r["score"] >= cut]
        assert pages == [[v] for v in kept]  # no empty page, and no cursor to one


# -- what reads reveal -----------------------------------------------------------------------------
def test_anonymous_readers_see_no_server_paths(shared_library):
    settings, clips = shared_library
    root = str(settings.library_roots[0])
    with TestClient(create_app(settings)) as client:
        anonymous = [client.get("/v1/videos").text, client.get("/v1/index").text,
                     client.post("/v1/search", json={"query": "colour bars"}).text]  # fmt: skip
        for text in anonymous:
            assert root not in text and str(settings.db) not in text
        uris = {v["uri"] for v in client.get("/v1/videos").json()["videos"]}
        assert "media/bars.mp4" in uris
        assert client.get("/v1/index").json()["failures"][0]["path"] == "broken/notes.mp4"
        assert client.get("/v1/jobs").status_code == 401  # job records name server paths
        keyed = client.get("/v1/videos", headers=AUTH).json()["videos"]
        assert str(clips["bars"]) in {v["uri"] for v in keyed}


def test_read_auth_covers_metrics_and_readiness_details(shared_library):
    settings, _ = shared_library
    keyed = settings.model_copy(update={"read_auth": True})
    with TestClient(create_app(keyed)) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers=AUTH).status_code == 200
        assert client.get("/readyz").json() == {"status": "ready"}
        assert "model" in client.get("/readyz", headers=AUTH).json()
        assert client.get("/healthz").status_code == 200
        for path in ("/openapi.json", "/docs", "/redoc"):  # the API's description too (it was open)
            assert client.get(path).status_code == 401, path
            assert client.get(path, headers={"Authorization": "Bearer nope"}).status_code == 403, path
            assert client.get(path, headers=AUTH).status_code == 200, path
    with TestClient(create_app(settings)) as client:  # without read_auth: open as every read
        assert client.get("/openapi.json").status_code == 200 and client.get("/docs").status_code == 200


def _children(pid: int) -> set[int]:
    """Live processes whose parent is `pid` (Linux /proc)."""
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_bytes()
            except OSError:
                continue
            if int(stat[stat.rindex(b")") + 2 :].split()[1]) == pid:
                out.add(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return state[state.rindex(b")") + 2 :].split()[0] != b"Z"


@pytest.mark.slow
def test_a_killed_servers_job_dies_with_it_and_the_next_server_says_so(small_library, long_clip, tmp_path):
    """The job's work (decoder processes included) ends with the server that owns it, so a restarted
    server that reports the job failed tells the truth."""
    import signal
    import sys

    from api_fixtures import ServerProcess, free_port

    settings, _ = small_library
    lib = settings.library_roots[0]

    def serve(port: int) -> ServerProcess:
        command = [sys.executable, "-m", "vidsearch.cli", "serve", "--db", str(settings.db), "--model", "tiny", "--pretrained", "none",
                   "--host", "127.0.0.1", "--port", str(port), "--api-key", API_KEY, "--library-root", str(lib)]  # fmt: skip
        env = {**os.environ, "VIDSEARCH_SAMPLE_FPS": "30", "VIDSEARCH_SPEECH": "false", "VIDSEARCH_OCR": "false"}
        return ServerProcess("vidsearch serve", command, f"http://127.0.0.1:{port}", "/readyz", tmp_path / f"serve-{port}.log", env=env, timeout=300)

    with serve(free_port()) as server, httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as http:
        job = http.post("/v1/jobs", json={"paths": [str(long_clip.parent)]}).json()
        deadline = time.monotonic() + 60
        while not (workers := _children(server.proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert workers, "the job started no decoder process"
        assert http.get(f"/v1/jobs/{job['id']}").json()["state"] == "running"
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
        deadline = time.monotonic() + 10
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(w) for w in workers), "decoder processes outlived the killed server"
    with serve(free_port()) as again, httpx.Client(base_url=again.url, headers=AUTH, timeout=30) as http:
        after = http.get(f"/v1/jobs/{job['id']}").json()
        assert after["state"] == "failed" and "stopped before" in after["error"]


def test_signed_media_urls_name_one_video_and_expire(shared_library):
    from vidsearch.signing import sign_query, signature

    settings, _ = shared_library
    keyed = settings.model_copy(update={"read_auth": True})
    with TestClient(create_app(keyed)) as client:
        a, b = sorted(v["id"] for v in client.get("/v1/videos", headers=AUTH).json()["videos"])[:2]
        assert client.get(f"/v1/videos/{a}/media").status_code == 401
        assert client.get(f"/v1/videos/{a}/media?{sign_query(API_KEY, a)}").status_code == 200
        assert client.get(f"/v1/videos/{a}/thumbnail?t=1&{sign_query(API_KEY, a)}").status_code == 200
        assert client.get(f"/v1/videos/{b}/media?{sign_query(API_KEY, a)}").status_code == 403  # another video's URL
        assert client.get(f"/v1/videos/{a}/media?{sign_query('not-a-key', a)}").status_code == 403
        past = int(time.time()) - 10
        assert client.get(f"/v1/videos/{a}/media?exp={past}&sig={signature(API_KEY, a, past)}").status_code == 403
        assert client.get(f"/v1/videos/{a}").status_code == 401  # a signature opens media and thumbnails only
