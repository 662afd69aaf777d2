"""The Python client puts ids into URL paths as one escaped segment (an id cannot reach another route),
turns every answer that is not JSON into its own ApiError, and checks its arguments before sending."""

from __future__ import annotations

import base64
import math

import httpx
import pytest
from pydantic import ValidationError

from api_fixtures import API_KEY
from vidsearch.client import ApiError, AppTransport, VidsearchClient

class Recorder:
    """A transport that remembers each request's raw path and answers with `answer(request)`."""

    def __init__(self, answer=None):
        self.paths: list[bytes] = []
        self.requests: list[httpx.Request] = []
        self.answer = answer or (lambda request: httpx.Response(404, json={"detail": "not found"}))

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.raw_path)
        self.requests.append(request)
        return self.answer(request)


def recording_client(answer=None) -> tuple[VidsearchClient, Recorder]:
    rec = Recorder(answer)
    return VidsearchClient("http://vidsearch.test", api_key="k", transport=httpx.MockTransport(rec)), rec


CALLS = {
    "video": lambda c, i: c.video(i),
    "delete_video": lambda c, i: c.delete_video(i),
    "media": lambda c, i: c.media(i),
    "media_size": lambda c, i: c.media_size(i),
    "thumbnail": lambda c, i: c.thumbnail(i),
    "clip": lambda c, i: c.clip(i, 0, 1),
    "job": lambda c, i: c.job(i),
    "cancel_job": lambda c, i: c.cancel_job(i),
    "wait_for_job": lambda c, i: c.wait_for_job(i, timeout=0),
}


@pytest.mark.parametrize("method", [m for m, call in CALLS.items() if call])
@pytest.mark.parametrize("ident", ["../jobs/j1", "..", ".", "?x", "#x", "a/b", "a b%2F"])
def test_ids_are_one_escaped_path_segment(method, ident):
    client, rec = recording_client()
    with pytest.raises(ApiError) as err:
        CALLS[method](client, ident)
    assert err.value.status == 404
    (path,) = rec.paths
    prefix = b"/v1/jobs/" if "job" in method else b"/v1/videos/"
    assert path.startswith(prefix), path
    segment = path[len(prefix) :].split(b"/")[0].split(b"?")[0]
    assert b"/" not in segment and b"?" not in segment and b"#" not in segment
    assert httpx.URL("http://h/" + segment.decode()).path == "/" + ident or segment in (b"%2E", b"%2E%2E")
    assert b"/jobs/j1" not in path or prefix == b"/v1/jobs/"
    assert client.media_url(ident).startswith("http://vidsearch.test/v1/videos/") and "/jobs" not in client.media_url(ident)


@pytest.mark.parametrize("method", [m for m, call in CALLS.items() if call])
def test_an_empty_id_is_refused(method):
    client, rec = recording_client()
    with pytest.raises(ValueError, match="empty"):
        CALLS[method](client, "")
    assert rec.paths == []
    with pytest.raises(ValueError, match="empty"):
        client.media_url("")


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html>the UI</html>", headers={"content-type": "text/html"}),
        httpx.Response(307, headers={"location": "/v1/videos"}),
        httpx.Response(502, text="<html>Bad Gateway</html>" * 100, headers={"content-type": "text/html"}),
        httpx.Response(500, json=["not", "an", "object"]),
    ],
)
def test_answers_that_are_not_json_are_api_errors(response):
    client, _ = recording_client(lambda request: response)
    for call in (lambda: client.video("abc"), lambda: client.delete_video("abc"), lambda: client.jobs(), lambda: client.ready()):
        with pytest.raises(ApiError) as err:
            call()
        assert err.value.status == response.status_code
        assert len(err.value.detail) < 400, err.value.detail
        if response.status_code < 300:
            assert "not JSON" in err.value.detail and "the UI" in err.value.detail


def test_image_may_be_bytes_a_path_or_base64(tmp_path):
    picture = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    answer = {"query": "", "results": [], "took_ms": 1.0, "index_version": "v"}

    def ok(request):
        return httpx.Response(200, json=answer)

    client, rec = recording_client(ok)
    (tmp_path / "a.png").write_bytes(picture)
    b64 = base64.b64encode(picture).decode()
    for image in (picture, bytearray(picture), str(tmp_path / "a.png"), tmp_path / "a.png", b64, "data:image/png;base64," + b64):
        try:
            client.search(image=image)
        except ValidationError:
            pass  # the stub's answer is not a full SearchResponse: what was sent is what matters
        assert picture in rec.requests[-1].read(), type(image)
    for image, words in ((str(tmp_path / "missing.png"), "names no file"), (tmp_path / "missing.png", "names no file"),
                         ("not base64 at all!", "bytes, a path"), (123, "bytes, a path"), (str(tmp_path), "names no file")):  # fmt: skip
        with pytest.raises((ValueError, TypeError), match=words):
            client.search(image=image)


def test_export_options_are_checked_before_sending():
    client, rec = recording_client(lambda request: httpx.Response(200, text="TITLE: x\n"))
    item = [{"video_id": "abc", "start": 0, "end": 2}]
    for options in ({"fps": math.nan}, {"fps": math.inf}, {"padding": math.nan}, {"fps": 100, "format": "edl"}, {"format": "mov"}, {"fps": 0.001}):
        with pytest.raises(ValidationError):
            client.export(item, **options)
    with pytest.raises(ValidationError):
        client.export([{**item[0], "label": "x"}])
    assert rec.paths == []
    assert client.export(item, "edl", fps=25) == "TITLE: x\n"


def test_against_the_app(shared_library):
    """The same over the real routes (in process): an id that names another route is just an unknown id."""
    settings, _ = shared_library
    from vidsearch.server import create_app

    with VidsearchClient("http://in-process", api_key=API_KEY, transport=AppTransport(create_app(settings))) as client:
        some = client.videos(limit=1).videos[0]
        assert client.video(some.id).id == some.id
        for ident in ("../jobs", "..", "?x", "#x", "../videos"):
            with pytest.raises(ApiError) as err:
                client.video(ident)
            assert err.value.status == 404, ident
        with pytest.raises(ApiError) as err:
            client.job("../videos/" + some.id)  # (not cancel_job: before the fix that would delete the video)
        assert err.value.status == 404


def test_the_api_url_needs_its_scheme_and_may_end_in_v1():
    """`--api localhost:8080` read as the scheme `localhost` ("unsupported protocol"); `.../v1` gave 404s."""
    with pytest.raises(ValueError, match="needs its scheme: e.g. http://localhost:8080"):
        VidsearchClient("localhost:8080")
    assert VidsearchClient("http://localhost:8080/v1/").base_url == "http://localhost:8080"
    assert VidsearchClient("https://search.example/root/").base_url == "https://search.example/root"


@pytest.mark.parametrize("timeout", [0, -1, float("nan")])
def test_a_timeout_that_cannot_be_waited_is_refused(timeout):
    """`timeout=0` failed every call with "cannot reach ... Operation now in progress", as if the server were down."""
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        VidsearchClient("http://127.0.0.1:9", timeout=timeout)
    VidsearchClient("http://127.0.0.1:9", timeout=None).close()  # None: as long as it takes
