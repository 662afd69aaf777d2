"""The third probe of the HTTP API and its client (p21/server_probe, N4-N12): each test failed on the
code before its fix.

- no absolute server path in any message an anonymous reader gets (failure reasons, 503s);
- clips start where they were asked to (real keyframes, VP9 too) and are never empty files;
- the client follows object storage's redirects, passes every `like` option, and says when it stops
  waiting for a job;
- /v1/videos pages by the cursor it hands out; JSON sent without its Content-Type, or the request
  part sent as a file, is understood or explained;
- HTTP details: 422s without pydantic's prefix, a wrong key is 401 on an open read, thumbnails
  answer HEAD with an ETag, every video type has its Content-Type, an unbuilt index is 503 for
  search as for every read, and OpenAPI lists the codes routes send.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from api_fixtures import API_KEY
from media import ffmpeg, make_clip
from test_server_hardening import settings_for, small_library, video_ids  # noqa: F401 - small_library is a fixture
from vidsearch.client import VidsearchClient
from vidsearch.indexer.pipeline import IndexRun, open_store_for
from vidsearch.server import create_app

AUTH = {"Authorization": f"Bearer {API_KEY}"}


# -- N4: no server paths in messages ---------------------------------------------------------------
def test_failure_reasons_name_no_server_path_without_a_key(small_library, tmp_path, tiny_backbone):
    """A link that leads outside the library failed with its absolute target in `error` ("symbolic link
    leads outside the library (/abs/secret.mp4)"); only `path` was rewritten for anonymous readers."""
    settings, _ = small_library
    lib = settings.library_roots[0]
    secret = make_clip(tmp_path / "outside" / "secret.mp4", seconds=1, audio_hz=None)
    (lib / "links").mkdir()
    (lib / "links" / "out.mp4").symlink_to(secret)
    (lib / "man.jsonl").write_text(json.dumps({"video": str(tmp_path / "outside" / "gone.mp4")}) + "\n")
    IndexRun(open_store_for(settings, tiny_backbone), tiny_backbone, settings).run([lib / "links", lib / "man.jsonl"])
    with TestClient(create_app(settings)) as client:
        anonymous = client.get("/v1/index")
        assert anonymous.status_code == 200 and str(tmp_path) not in anonymous.text, anonymous.text
        errors = {f["path"]: f["error"] for f in anonymous.json()["failures"]}
        assert "secret.mp4" in errors["links/out.mp4"]  # the name is still said, relative or bare
        keyed = client.get("/v1/index", headers=AUTH).json()
        assert any(str(secret) in f["error"] for f in keyed["failures"]), keyed["failures"]  # an operator sees where


def test_an_unbuilt_index_is_503_without_its_path_for_anonymous_readers(tmp_path):
    """"no index at /abs/db: build one with ..." reached every anonymous reader."""
    settings = settings_for(tmp_path / "nothing")
    with TestClient(create_app(settings)) as client:
        for method, url, body in (("GET", "/v1/videos", None), ("GET", "/v1/index", None), ("GET", "/readyz", None),
                                  ("POST", "/v1/search", {"query": "red"})):  # fmt: skip
            resp = client.request(method, url, json=body)
            assert resp.status_code == 503, (url, resp.status_code, resp.text)
            assert str(tmp_path) not in resp.text and "no index at db" in resp.json()["detail"], (url, resp.text)
            keyed = client.request(method, url, json=body, headers=AUTH)
            assert keyed.status_code == 503 and str(settings.db) in keyed.json()["detail"], (url, keyed.text)


def test_message_paths_are_shown_relative_or_bare():
    from vidsearch.server.exposure import PathView

    view = PathView(False, ["/srv/lib"])
    assert view.text("video /srv/lib/a/b.mp4 does not exist") == "video a/b.mp4 does not exist"
    assert view.text("no index at /var/idx: build one with `vidsearch index PATH --db /var/idx`") == (
        "no index at idx: build one with `vidsearch index PATH --db idx`")  # fmt: skip
    assert view.text("leads outside the library (/etc/x.mp4): not followed") == "leads outside the library (x.mp4): not followed"
    assert view.text("same as line 1 (/srv/lib/man/../../out/y.mp4), whose") == "same as line 1 (y.mp4), whose"
    assert view.text("a file:///srv/lib/z.mp4, 1/2 and s3://bucket/k and http://h/p") == "a z.mp4, 1/2 and s3://bucket/k and http://h/p"
    assert view.text("video /srv/lib/no audio.mp4 failed", known=["/srv/lib/no audio.mp4"]) == "video no audio.mp4 failed"
    assert view.text("see GET /v1/index and /readyz.") == "see GET /v1/index and /readyz."  # the API's routes are no paths
    assert PathView(True, ["/srv/lib"]).text("video /srv/lib/a.mp4") == "video /srv/lib/a.mp4"


# -- N5, N6: clips ---------------------------------------------------------------------------------
def test_a_vp9_clip_is_not_copied_from_an_earlier_keyframe(tmp_path):
    """ffprobe's `-skip_frame nokey` is ignored by the VP9 decoder: every frame read as a keyframe, so
    every clip of a WebM was copied, starting at its one keyframe (0 s)."""
    from vidsearch.server.clips import cut_clip, keyframe_at

    video = tmp_path / "one_key.webm"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=10:duration=5", "-c:v", "libvpx-vp9", "-deadline", "realtime",
           "-cpu-used", "8", "-g", "1000", "-b:v", "100k", str(video))  # fmt: skip
    assert keyframe_at(video, 0.0)
    assert not keyframe_at(video, 2.0) and not keyframe_at(video, 4.0)
    cache = tmp_path / "cache"
    cache.mkdir()
    assert cut_clip(video, "v", 2.0, 3.0, cache).method == "encode"


def test_a_clip_of_a_stretch_that_cannot_be_decoded_is_refused(tmp_path, small_library):
    """A truncated file's missing stretch was cut into a 262-byte MP4 with no stream, answered 200."""
    from vidsearch.server.clips import ClipError, cut_clip

    full = make_clip(tmp_path / "full.mp4", seconds=6, audio_hz=None, extra=("-g", "25", "-movflags", "+faststart"))
    data = full.read_bytes()
    truncated = tmp_path / "trunc.mp4"
    truncated.write_bytes(data[: len(data) * 4 // 10])
    cache = tmp_path / "cache"
    cache.mkdir()
    with pytest.raises(ClipError, match="no frame"):
        cut_clip(truncated, "v", 4.0, 5.0, cache)
    assert cut_clip(truncated, "v", 0.0, 1.0, cache).path.stat().st_size > 1000  # the decodable start still cuts
    # over HTTP: 404, as the thumbnail of that stretch
    settings, _ = small_library
    lib = settings.library_roots[0]
    (lib / "trunc").mkdir()
    os.replace(truncated, lib / "trunc" / "t.mp4")
    with TestClient(create_app(settings), headers=AUTH) as client:
        job = client.post("/v1/jobs", json={"paths": [str(lib / "trunc")]}).json()
        from test_server_hardening import wait_job

        assert wait_job(client, job["id"])["state"] == "succeeded"
        vid = video_ids(client)["t"]
        resp = client.get(f"/v1/videos/{vid}/clip", params={"start": 4, "end": 5})
        assert resp.status_code == 404 and "no frame" in resp.json()["detail"], (resp.status_code, resp.text[:200])


# -- N8, N9: the client ----------------------------------------------------------------------------
def test_client_media_follows_object_storage_redirects():
    """/media answers 307 to a presigned URL for object storage; media() returned b"" and media_size() 0."""
    body = b"\x00\x00\x00\x18ftypmp42" + bytes(1000)
    seen = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "vidsearch.test":
            return httpx.Response(307, headers={"location": "https://bucket.example/v.mp4?X-Amz-Signature=s"})
        if request.headers.get("range") == "bytes=0-0":
            return httpx.Response(206, content=body[:1], headers={"content-range": f"bytes 0-0/{len(body)}", "content-type": "video/mp4"})
        return httpx.Response(200, content=body, headers={"content-type": "video/mp4"})

    client = VidsearchClient("http://vidsearch.test", api_key="k", transport=httpx.MockTransport(answer))
    assert client.media("abc") == (body, "video/mp4")
    assert client.media_size("abc") == len(body)
    assert all("authorization" not in r.headers for r in seen if r.url.host == "bucket.example")  # the key stays home


def test_client_more_like_passes_like_options():
    sent = []

    def answer(request):
        sent.append(json.loads(request.read()))
        return httpx.Response(200, json={"query": "", "group_by": "video", "results": [], "index_version": "v", "took_ms": 1.0})

    client = VidsearchClient("http://vidsearch.test", transport=httpx.MockTransport(answer))
    client.more_like("V", 0, 2, include_source=True, top_k=3)
    assert sent[-1]["like"] == {"video_id": "V", "start": 0.0, "end": 2.0, "include_source": True} and sent[-1]["top_k"] == 3


def test_wait_for_job_raises_when_the_job_is_still_running():
    job = {"id": "j1", "kind": "index", "paths": ["/x"], "state": "running", "created_at": 1.0}
    client = VidsearchClient("http://vidsearch.test", api_key="k", transport=httpx.MockTransport(lambda r: httpx.Response(200, json=job)))
    with pytest.raises(TimeoutError, match="j1.*still running"):
        client.wait_for_job("j1", timeout=0.05, poll=0.01)


# -- N10, N11: paging and request bodies ----------------------------------------------------------
def test_video_list_pages_by_its_cursor(shared_library):
    """next_cursor was handed out but `cursor` ignored: following it looped on the first page forever."""
    settings, _ = shared_library
    with TestClient(create_app(settings)) as client:
        everything = [v["id"] for v in client.get("/v1/videos").json()["videos"]]
        pages, params = [], {"limit": 3}
        while True:
            page = client.get("/v1/videos", params=params).json()
            pages += [v["id"] for v in page["videos"]]
            if page["next_cursor"] is None:
                break
            assert len(pages) <= len(everything), "the cursor loops"
            params = {"limit": 3, "cursor": page["next_cursor"]}
        assert pages == everything
        assert [v["id"] for v in client.get("/v1/videos", params={"limit": 2, "offset": 2}).json()["videos"]] == everything[2:4]
        bad = client.get("/v1/videos", params={"cursor": "x"})
        assert bad.status_code == 400 and "next_cursor" in bad.json()["detail"]
    with VidsearchClient("http://in-process", transport=httpx.MockTransport(_videos_pages(everything))) as vs:
        assert [v.id for v in vs.iter_videos(page_size=3)] == everything
        assert vs.videos(limit=3, cursor="3").videos[0].id == everything[3]


def _videos_pages(ids: list[str]):
    """A stub /v1/videos that pages by `cursor` only."""

    def answer(request: httpx.Request) -> httpx.Response:
        start = int(request.url.params.get("cursor", "0"))
        limit = int(request.url.params["limit"])
        page = [{"id": i, "uri": i, "title": i, "duration": 1.0} for i in ids[start : start + limit]]
        nxt = str(start + limit) if start + limit < len(ids) else None
        return httpx.Response(200, json={"videos": page, "total": len(ids), "next_cursor": nxt})

    return answer


def test_search_json_without_its_content_type_is_explained(shared_library, tmp_path):
    settings, _ = shared_library
    with TestClient(create_app(settings)) as client:
        # curl -d sends application/x-www-form-urlencoded
        resp = client.post("/v1/search", content=b'{"query":"red"}', headers={"content-type": "application/x-www-form-urlencoded"})
        assert resp.status_code == 415 and "Content-Type: application/json" in resp.json()["detail"], resp.text
        resp = client.post("/v1/search", content=b'{"query":"red"}', headers={"content-type": "text/plain"})
        assert resp.status_code == 415
        # no Content-Type at all (requests' data=, curl --data-binary): read as the JSON it is; with a charset too
        for headers in ({}, {"content-type": "application/json; charset=utf-8"}):
            resp = client.post("/v1/search", content=b'{"query":"red","top_k":1}', headers=headers)
            assert resp.status_code == 200 and len(resp.json()["results"]) == 1, (headers, resp.text)
        # curl -F request=@req.json: the request part as a file
        resp = client.post("/v1/search", files={"request": ("req.json", b'{"query":"colour bars","top_k":1}', "application/json")})
        assert resp.status_code == 200 and len(resp.json()["results"]) == 1, resp.text
        resp = client.post("/v1/search", files=[("query", (None, b"red")), ("like", (None, b"x"))])  # was dropped silently
        assert resp.status_code == 422 and "like" in resp.json()["detail"], resp.text


# -- N12: HTTP details -----------------------------------------------------------------------------
def test_validation_messages_lose_pydantics_prefix(shared_library):
    settings, _ = shared_library
    with TestClient(create_app(settings)) as client:
        detail = client.post("/v1/search", json={"query": "   "}).json()["detail"]
        assert detail == "query must contain at least one non-space character", detail


def test_a_wrong_key_on_an_open_read_is_401(shared_library):
    settings, _ = shared_library
    wrong = {"Authorization": "Bearer not-a-key"}
    with TestClient(create_app(settings)) as client:
        vid = client.get("/v1/videos").json()["videos"][0]["id"]
        for method, url, body in (("GET", "/v1/videos", None), ("GET", f"/v1/videos/{vid}", None), ("GET", "/v1/index", None),
                                  ("POST", "/v1/search", {"query": "red"}), ("GET", f"/v1/videos/{vid}/media", None),
                                  ("GET", f"/v1/videos/{vid}/thumbnail", None)):  # fmt: skip
            resp = client.request(method, url, json=body, headers=wrong)
            assert resp.status_code == 401 and "not accepted" in resp.json()["detail"], (url, resp.status_code)
            assert client.request(method, url, json=body).status_code == 200, url  # no key: anonymous, as before
            assert client.request(method, url, json=body, headers=AUTH).status_code == 200, url
    keyless = settings.model_copy(update={"api_keys": []})  # a server with no keys: a token is meant for another
    with TestClient(create_app(keyless)) as client:
        assert client.get("/v1/videos", headers=wrong).status_code == 200


def test_thumbnails_answer_head_and_etags(shared_library):
    settings, _ = shared_library
    with TestClient(create_app(settings)) as client:
        vid = client.get("/v1/videos").json()["videos"][0]["id"]
        url = f"/v1/videos/{vid}/thumbnail?t=1"
        got = client.get(url)
        assert got.status_code == 200 and got.headers.get("etag"), got.headers
        head = client.head(url)
        assert head.status_code == 200 and head.content == b"" and head.headers["etag"] == got.headers["etag"]
        assert int(head.headers["content-length"]) == len(got.content)
        assert client.get(url, headers={"If-None-Match": got.headers["etag"]}).status_code == 304


def test_every_video_type_has_its_content_type():
    from vidsearch.server.media import media_type

    for name, kind in (("a.avi", "video/x-msvideo"), ("a.ts", "video/mp2t"), ("a.m2ts", "video/mp2t"), ("a.mpg", "video/mpeg"),
                       ("a.flv", "video/x-flv"), ("a.wmv", "video/x-ms-wmv"), ("a.3gp", "video/3gpp"), ("a.MP4", "video/mp4"),
                       ("a.gif", "image/gif")):  # fmt: skip
        assert media_type(Path(name)) == kind, name
    assert media_type(Path("a.unknownext")) == "application/octet-stream"


def test_search_on_an_empty_index_says_why(tmp_path):
    from vidsearch.config import load_settings
    from vidsearch.store import Store

    settings = load_settings(None, db=tmp_path / "empty")
    Store.open(settings.db, create=True)
    with TestClient(create_app(settings)) as client:
        resp = client.post("/v1/search", json={"query": "anything"})
        assert resp.status_code == 200 and resp.json()["results"] == [] and resp.json()["message"], resp.text


def test_openapi_lists_the_codes_routes_send(shared_library):
    settings, _ = shared_library
    with TestClient(create_app(settings)) as client:
        paths = client.get("/openapi.json").json()["paths"]
    assert "416" in paths["/v1/videos/{video_id}/media"]["get"]["responses"]
    assert {"206", "304", "416"} <= set(paths["/v1/videos/{video_id}/clip"]["get"]["responses"])  # p22: 304 was missing
    assert {"401", "403"} <= set(paths["/metrics"]["get"]["responses"])  # p22: only 200 was listed
    assert "413" in paths["/v1/export"]["post"]["responses"]
    for path, method in (("/v1/videos", "get"), ("/v1/videos/{video_id}", "get"), ("/v1/search", "post"), ("/v1/index", "get"),
                         ("/v1/videos/{video_id}/media", "get"), ("/v1/videos/{video_id}/thumbnail", "get"),
                         ("/v1/videos/{video_id}/clip", "get"), ("/v1/export", "post")):  # fmt: skip
        assert "503" in paths[path][method]["responses"], (path, method)
