"""The fourth round on the HTTP API (left from p21's verification, D5-D9): each test failed on the code
before its fix.

- /v1/videos cursors name the page's last video, so a deletion between pages neither skips nor repeats
  a video (they were offsets);
- a server path in a message is hidden from anonymous readers however it is spelt (`file:/x`,
  `~/../x`), and the 400 for a cursor no longer echoes it;
- a multipart search that gives a part twice, or its query both as a part and in `request`, is a 422
  (one of them silently won);
- a file opened for thumbnails and clips is probed once, not once per miss;
- the p22 probe: the client strips a key's newline and never prints a key, tells a timeout from a
  dead server, and waits out a server restart in `wait_for_job` and `iter_videos`.
"""

from __future__ import annotations

import time

import pytest
from fastapi import HTTPException
from fastapi.testclient import TestClient

from vidsearch.server import create_app

from vidsearch.server.videos import videos_page


def _rows(titles: list[str]) -> list[dict]:
    return [{"title": t, "video_id": f"id-{i:02d}"} for i, t in enumerate(titles)]


def _walk(rows: list[dict], limit: int, between=None) -> list[str]:
    """Every title, page by page, calling `between(rows)` after each page (a deletion, an addition)."""
    seen, cursor = [], None
    while True:
        page, cursor = videos_page(rows, limit, cursor=cursor)
        seen += [r["title"] for r in page]
        if cursor is None:
            return seen
        if between is not None:
            rows = between(rows)


def test_a_deletion_between_pages_neither_skips_nor_repeats():
    titles = [f"clip {c}" for c in "abcdefghij"]
    rows = _rows(titles)
    assert _walk(rows, 3) == titles

    def delete_first(rows):  # someone deletes the first video (already listed) after each page
        return rows[1:]

    assert _walk(rows, 3, delete_first) == titles  # offsets skipped "clip d", "clip g" and "clip j"

    listed: list[str] = []

    def delete_last_listed(rows):  # the cursor's own video goes: the next page starts where it was
        return [r for r in rows if r["title"] != listed[-1]]

    cursor, current = None, rows
    while True:
        page, cursor = videos_page(current, 4, cursor=cursor)
        listed += [r["title"] for r in page]
        if cursor is None:
            break
        current = delete_last_listed(current)
    assert listed == titles


def test_a_video_renamed_between_pages_moves_no_other_one():
    """The cursor names where the page ended, not the video: the page's last video renamed to sort
    first (or last) neither repeats the rows after it nor skips them."""
    titles = [f"clip {c}" for c in "abcdefgh"]
    for renamed in ("a0 first now", "zz last now"):
        rows, listed, cursor = _rows(titles), [], None
        while True:
            page, cursor = videos_page(rows, 3, cursor=cursor)
            listed += [r["video_id"] for r in page]
            if cursor is None:
                break
            rows = [{**r, "title": renamed} if r["video_id"] == page[-1]["video_id"] else r for r in rows]
        others = [r["video_id"] for r in _rows(titles)]
        assert sorted(set(listed)) == others and len(listed) == len(set(listed)) + (renamed.startswith("zz") * 2), (renamed, listed)


def test_long_and_repeated_titles_page_exactly():
    rows = _rows(["Same"] * 5 + ["x" * 5000 + str(i) for i in range(5)])
    assert [r["video_id"] for r in _walk_rows(rows, 2)] == sorted(r["video_id"] for r in rows[:5]) + [r["video_id"] for r in rows[5:]]


def _walk_rows(rows, limit):
    out, cursor = [], None
    while True:
        page, cursor = videos_page(rows, limit, cursor=cursor)
        out += page
        if cursor is None:
            return out


@pytest.mark.parametrize("bad", ["x", "k", "k!!!", "kW10", "-1", "knot-json"])
def test_a_cursor_it_did_not_make_is_a_400(bad):
    with pytest.raises(HTTPException) as err:
        videos_page(_rows(["a", "b"]), 1, cursor=bad)
    assert err.value.status_code == 400 and "next_cursor" in err.value.detail


def test_numeric_cursors_of_earlier_servers_still_page():
    rows = _rows(list("abcde"))
    page, _ = videos_page(rows, 2, cursor="2")
    assert [r["title"] for r in page] == ["c", "d"]


# -- D7: every spelling of a server path is hidden from anonymous readers ---------------------------
@pytest.mark.parametrize(
    "message, shown",
    [
        ("line 14: file:/etc/secret.mp4 is outside the library", "line 14: secret.mp4 is outside the library"),
        ("line 15: ~/..//etc/passwd is outside the library", "line 15: passwd is outside the library"),
        ("(~root/private/a.mp4)", "(a.mp4)"),
        ("read file:///srv/lib/films/a.mp4.", "read films/a.mp4."),
        ("GET /v1/index, 1/2 done, see http://host/x/y", "GET /v1/index, 1/2 done, see http://host/x/y"),
    ],
)
def test_paths_in_messages_hidden_in_every_spelling(message, shown):
    from vidsearch.server.exposure import PathView

    assert PathView(False, ["/srv/lib"]).text(message) == shown
    assert PathView(True, ["/srv/lib"]).text(message) == message


# -- D9: a multipart search says when it is given a part twice --------------------------------------
def test_a_part_given_twice_is_a_422(shared_library):
    settings, _ = shared_library
    with TestClient(create_app(settings)) as client:
        resp = client.post("/v1/search", files=[("query", (None, b"red")), ("query", (None, b"blue"))])
        assert resp.status_code == 422 and "more than once" in resp.json()["detail"], resp.text
        both = [("query", (None, b"red")), ("request", (None, b'{"query": "blue", "top_k": 1}'))]
        resp = client.post("/v1/search", files=both)
        assert resp.status_code == 422 and "both" in resp.json()["detail"], resp.text
        same = [("query", (None, b"red")), ("request", (None, b'{"query": "red", "top_k": 1}'))]
        assert client.post("/v1/search", files=same).status_code == 200
        resp = client.post("/v1/search", files=[("query", (None, b"red")), ("request", (None, b'{"top_k": 1}'))])
        assert resp.status_code == 200 and len(resp.json()["results"]) == 1, resp.text


# -- one probe per opened file, not one per thumbnail --------------------------------------------
def test_thumbnails_of_one_file_share_one_probe(tmp_path, monkeypatch):
    """Each thumbnail or clip that missed the cache ran ffprobe for the file's tracks first; a results
    page asks for a dozen of the same videos. The layout is remembered by the file's identity, and a
    file changed in place is probed again."""
    import os

    from media import make_clip
    from vidsearch.server import media

    clip = make_clip(tmp_path / "a.mp4", seconds=2.0)
    probes = []
    real = media.probe_layout
    monkeypatch.setattr(media, "probe_layout", lambda source, fds=(): probes.append(source) or real(source, fds))
    fd = os.open(clip, os.O_RDONLY)
    try:
        for _ in range(3):  # three thumbnails of one file
            layout = media.media_layout(f"/proc/self/fd/{fd}", (fd,))
            assert layout.probed and layout.video_map[0] == "-map"
        assert len(probes) == 1
    finally:
        os.close(fd)
    make_clip(clip, seconds=1.0)  # replaced: another file
    fd = os.open(clip, os.O_RDONLY)
    try:
        media.media_layout(f"/proc/self/fd/{fd}", (fd,))
    finally:
        os.close(fd)
    assert len(probes) == 2


# -- p22 probe S4, S5: the client's key, timeouts and restarts --------------------------------------
def _job(state: str) -> dict:
    return {"id": "j1", "kind": "index", "paths": ["/x"], "state": state, "created_at": 1.0}


def test_a_key_read_with_its_newline_works_and_a_bad_one_is_never_printed():
    import httpx

    from vidsearch.client import VidsearchClient

    seen = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        return httpx.Response(200, json=_job("succeeded"))

    with VidsearchClient("http://h.test", api_key="K1-secret\n", transport=httpx.MockTransport(answer)) as vs:
        assert vs.job("j1").state == "succeeded" and seen == ["Bearer K1-secret"]
    with pytest.raises(ValueError) as err:
        VidsearchClient("http://h.test", api_key="K1 secret")
    assert "secret" not in str(err.value)


def test_a_timeout_is_told_from_a_dead_server():
    import httpx

    from vidsearch.client import ApiError, ApiTimeout, VidsearchClient

    def slow(request):
        raise httpx.ReadTimeout("timed out", request=request)

    def refused(request):
        raise httpx.ConnectError("connection refused", request=request)

    with VidsearchClient("http://h.test", transport=httpx.MockTransport(slow), timeout=2) as vs:
        with pytest.raises(ApiTimeout, match="did not answer GET /v1/jobs/j1 within 2 s"):
            vs.job("j1")
    with VidsearchClient("http://h.test", transport=httpx.MockTransport(refused)) as vs:
        with pytest.raises(ApiError, match="cannot reach") as err:
            vs.job("j1")
        assert not isinstance(err.value, ApiTimeout)


def test_waiting_for_a_job_rides_out_a_server_restart():
    """One refused connection while the server restarted ended wait_for_job at once, with 300 s to go."""
    import httpx

    from vidsearch.client import VidsearchClient

    answers = iter(["running", "refused", "refused", 503, "running", "succeeded"])

    def answer(request):
        a = next(answers)
        if a == "refused":
            raise httpx.ConnectError("connection refused", request=request)
        if a == 503:  # busy, come back: retried (a 503 without Retry-After is a lasting "no index": not)
            return httpx.Response(503, json={"detail": "busy"}, headers={"Retry-After": "1"})
        return httpx.Response(200, json=_job(a))

    with VidsearchClient("http://h.test", transport=httpx.MockTransport(answer)) as vs:
        assert vs.wait_for_job("j1", timeout=30, poll=0.01).state == "succeeded"
        answers = iter(["refused"] * 1000)
        start = time.monotonic()
        with pytest.raises(Exception, match="cannot reach"):
            vs.wait_for_job("j1", timeout=1.0, poll=0.01)  # still bounded by its timeout
        assert time.monotonic() - start < 3

    def no_index(request):
        return httpx.Response(503, json={"detail": "no index at idx"})

    with VidsearchClient("http://h.test", transport=httpx.MockTransport(no_index)) as vs:
        start = time.monotonic()
        with pytest.raises(Exception, match="no index"):
            list(vs.iter_videos())
        assert time.monotonic() - start < 1  # answered at once, not retried for 30 s


def test_client_jobs_pages_and_refuses_a_key_no_header_can_carry():
    import httpx

    from vidsearch.client import VidsearchClient

    asked = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(dict(request.url.params))
        return httpx.Response(200, json=[_job("failed")])

    with VidsearchClient("http://h.test", transport=httpx.MockTransport(answer)) as vs:
        assert [j.state for j in vs.jobs(limit=5, state="failed")] == ["failed"]
        vs.jobs()
    assert asked == [{"limit": "5", "state": "failed"}, {"limit": "50"}]
    with pytest.raises(ValueError, match="outside ASCII") as err:
        VidsearchClient("http://h.test", api_key="clé-secrète")
    assert "secr" not in str(err.value)


# -- p22 UI verification D2: the API says when its index is being written ----------------------------
def test_the_api_and_the_ui_in_api_mode_tell_an_index_being_written(shared_library, tmp_path):
    """A `reindex --rebuild` in a shell beside a server: the UI in API mode showed partial results, then
    "The index is empty", because only a local index's lock could be looked at."""
    import httpx

    from ui.backend import Backend, UiConfig
    from vidsearch.client import VidsearchClient
    from vidsearch.store import index_write_lock

    settings, _ = shared_library
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/index").json()["indexing"] is False
        with index_write_lock(settings.db):
            assert client.get("/v1/index").json()["indexing"] is True
    first = settings.model_copy(update={"db": tmp_path / "new-db"})  # a first build: no tables yet
    (tmp_path / "new-db").mkdir()
    with TestClient(create_app(first)) as client, index_write_lock(first.db):
        resp = client.get("/v1/index")
        assert resp.status_code == 503 and "indexing run is writing it now" in resp.json()["detail"], resp.text
        be = Backend(UiConfig(api_url="http://api.test", db=tmp_path / "unused"))
        be._client = VidsearchClient("http://api.test", transport=httpx.MockTransport(lambda r: httpx.Response(503, json=resp.json())))
        assert be.writing()
