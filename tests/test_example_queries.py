"""Queries by example: a picture (JSON base64 and multipart), a moment of an indexed video (`like`),
and their composition with words, through the search core, the API, the client and the CLI."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from media import ffmpeg
from test_api import client, library  # noqa: F401 - the API tests' module fixtures
from vidsearch.api_models import LikeQuery
from vidsearch.client import AppTransport, LOCAL_URL, VidsearchClient
from vidsearch.search import ImageTooLarge, NotAnImage, SearchError, VideoFeatures, compose, image_frame, like_vector
from vidsearch.server import create_app


# -- the maths, on controlled vectors -------------------------------------------------------------
def _unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def test_composed_score_is_the_weighted_sum_of_each_inputs_cosine():
    rng = np.random.default_rng(0)
    text, image, units = _unit(rng.normal(size=16)), _unit(rng.normal(size=16)), rng.normal(size=(50, 16))
    units /= np.linalg.norm(units, axis=1, keepdims=True)
    q = compose({"text": text, "image": image}, {"text": 3.0, "image": 1.0})
    assert q.inputs == {"text": 0.75, "image": 0.25}
    expected = 3 * units @ text + units @ image  # the same order as the weighted cosines...
    np.testing.assert_allclose(units @ q.vector, expected / np.linalg.norm(3 * text + image), rtol=1e-5, atol=1e-6)
    assert abs(np.linalg.norm(q.vector) - 1) < 1e-6
    # ...and an input with weight 0 has no effect at all
    alone = compose({"text": text, "image": image}, {"image": 0.0})
    np.testing.assert_allclose(alone.vector, text, atol=1e-6)
    assert alone.inputs == {"text": 1.0}
    with pytest.raises(SearchError, match="weight 0"):
        compose({"text": text}, {"text": 0.0})
    with pytest.raises(SearchError, match="cancel out"):
        compose({"text": text, "like": -text}, None)


def test_like_vector_is_the_mean_of_the_stored_units_in_the_range():
    vecs = np.eye(4, dtype=np.float32)
    f = VideoFeatures(np.array([0, 1, 2, 3], np.float32), np.array([1, 2, 3, 4], np.float32), vecs)
    got = like_vector(f, LikeQuery(video_id="v", start=1.2, end=2.5))  # overlaps units 1 and 2
    np.testing.assert_allclose(got, _unit([0, 1, 1, 0]), atol=1e-6)
    np.testing.assert_allclose(like_vector(f, LikeQuery(video_id="v")), _unit([1, 1, 1, 1]), atol=1e-6)
    with pytest.raises(SearchError, match="holds no indexed frames of video v"):
        like_vector(f, LikeQuery(video_id="v", start=10, end=12))
    with pytest.raises(SearchError, match="not an indexed video"):
        like_vector(None, LikeQuery(video_id="v"))


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def test_image_frame_is_prepared_as_indexed_frames_are():
    # a 300x200 picture, left half red, right half blue: short side to 64, centre crop keeps both
    pixels = np.zeros((200, 300, 3), np.uint8)
    pixels[:, :150] = (255, 0, 0)
    pixels[:, 150:] = (0, 0, 255)
    frame = image_frame(_png(pixels), 64, 10**6)
    assert frame.shape == (1, 64, 64, 3) and frame.dtype == np.uint8
    assert tuple(frame[0, 32, 2]) == (255, 0, 0) and tuple(frame[0, 32, 61]) == (0, 0, 255)
    # a phone photo stored sideways with an EXIF orientation is turned upright first
    tall = np.zeros((120, 80, 3), np.uint8)
    tall[:60] = (0, 255, 0)  # top half green when upright
    sideways = Image.fromarray(tall).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    buf = io.BytesIO()
    sideways.save(buf, format="JPEG", exif=exif, quality=95)
    upright = image_frame(buf.getvalue(), 32, 10**6)[0]
    assert upright[4, 16, 1] > 200 and upright[28, 16, 1] < 60
    with pytest.raises(NotAnImage, match="not a picture") as err:
        image_frame(b"this is not a picture", 32, 10**6)
    assert "21 bytes in no known picture format, or a damaged one" in str(err.value) and "BytesIO" not in str(err.value)  # nothing internal
    with pytest.raises(NotAnImage, match="empty"):
        image_frame(b"", 32, 10**6)
    with pytest.raises(ImageTooLarge, match="limit"):
        image_frame(_png(pixels), 32, 100)


def test_a_picture_past_the_pixel_limit_is_too_large_not_unreadable(monkeypatch):
    """ImageTooLarge is a ValueError (a SearchError): it was caught as an unreadable picture (415)."""
    import vidsearch.search.examples as examples

    monkeypatch.setattr(examples, "MAX_IMAGE_PIXELS", 300 * 200 - 1)
    with pytest.raises(ImageTooLarge, match="300x200 pixels; the limit is 59,999 pixels"):
        image_frame(_png(np.zeros((200, 300, 3), np.uint8)), 32, 10**6)


def test_a_thin_strip_costs_no_more_than_its_central_square():
    """A 1x60000 PNG (a few hundred bytes) was scaled to 112x6,720,000 before the crop: gigabytes and
    seconds of one request. It is the central square that is scaled now."""
    import resource
    import time

    strip = np.zeros((60000, 1, 3), np.uint8)
    strip[29000:31000] = (0, 200, 0)  # green around the centre
    data = _png(strip)
    assert len(data) < 2000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.process_time()
    frame = image_frame(data, 112, 10**6)
    assert time.process_time() - t0 < 0.5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KB: under 100 MB more at peak
    assert frame.shape == (1, 112, 112, 3) and tuple(frame[0, 56, 56]) == (0, 200, 0)


# -- through the API, on a real index (the API tests' library and app) ---------------------------
@pytest.fixture(scope="module")
def ids(client) -> dict[str, str]:
    return {v["title"].split()[1]: v["id"] for v in client.get("/v1/videos").json()["videos"]}


@pytest.fixture(scope="module")
def rgb_frame(library, tmp_path_factory) -> bytes:
    """One frame of the rgb clip at 2 s, as a user would grab it (a PNG at the video's size)."""
    _, clips = library
    out = tmp_path_factory.mktemp("frame") / "rgb.png"
    ffmpeg("-ss", "2", "-i", str(clips["rgb"]), "-frames:v", "1", str(out))
    return out.read_bytes()


def test_image_query_finds_the_video_the_picture_comes_from(client, ids, rgb_frame):
    b64 = base64.b64encode(rgb_frame).decode()
    for image in (b64, "data:image/png;base64," + b64):
        body = client.post("/v1/search", json={"image": image, "top_k": 4}).json()
        assert body["inputs"] == {"image": 1.0} and body["query"] == ""
        assert body["results"][0]["video"]["id"] == ids["rgb"]
        assert body["results"][0]["channel_scores"].keys() == {"visual"}
    # the same picture uploaded as a file, alone and with words and a request body
    up = client.post("/v1/search", files={"image": ("rgb.png", rgb_frame, "image/png")})
    assert up.status_code == 200 and up.json()["results"][0]["video"]["id"] == ids["rgb"]
    form = {"request": json.dumps({"query": "a test pattern", "top_k": 2, "query_weights": {"text": 1, "image": 3}, "channels": {"visual": 1}})}
    mixed = client.post("/v1/search", data=form, files={"image": ("rgb.png", rgb_frame, "image/png")}).json()
    assert mixed["inputs"] == {"text": 0.25, "image": 0.75} and mixed["query"] == "a test pattern"
    assert len(mixed["results"]) == 2 and mixed["results"][0]["video"]["id"] == ids["rgb"]


def test_image_errors_are_clear_4xx(client, library, rgb_frame, monkeypatch):
    not_image = client.post("/v1/search", files={"image": ("notes.jpg", b"hello, not a picture", "image/jpeg")})
    assert not_image.status_code == 415 and "not a picture" in not_image.json()["detail"]
    bad_b64 = client.post("/v1/search", json={"image": "%%% not base64 %%%"})
    assert bad_b64.status_code == 415 and "base64" in bad_b64.json()["detail"]
    settings, _ = library
    monkeypatch.setattr(settings, "max_image_mb", len(rgb_frame) / 2e6)
    for resp in (client.post("/v1/search", files={"image": ("a.png", rgb_frame)}),
                 client.post("/v1/search", json={"image": base64.b64encode(rgb_frame).decode()})):  # fmt: skip
        assert resp.status_code == 413 and "max_image_mb" in resp.json()["detail"]
    nothing = client.post("/v1/search", json={"top_k": 3})
    assert nothing.status_code == 422 and "give a query" in nothing.json()["detail"]
    bad_form = client.post("/v1/search", data={"request": "{not json"}, files={"image": ("a.png", rgb_frame)})
    assert bad_form.status_code == 422 and "request" in bad_form.json()["detail"]
    cut_off = client.post("/v1/search", content=b'{"query": ', headers={"content-type": "application/json"})
    assert cut_off.status_code == 422 and cut_off.json()["detail"] == "the body is not valid JSON (Expecting value at character 10)"
    # a multipart body cut off in its first part's headers read as an empty form ("give a query")
    cut_form = client.post("/v1/search", content=b'--xyz\r\nContent-Disposition: form-data; name="que',
                           headers={"content-type": "multipart/form-data; boundary=xyz"})  # fmt: skip
    assert cut_form.status_code == 400 and "no complete part" in cut_form.json()["detail"]


def test_wordless_query_refuses_text_channels(client, rgb_frame):
    b64 = base64.b64encode(rgb_frame).decode()
    resp = client.post("/v1/search", json={"image": b64, "channels": {"metadata": 1}})
    assert resp.status_code == 400 and "need a query in words" in resp.json()["detail"]


def test_like_finds_other_videos_and_never_re_encodes(client, ids, library):
    settings, _ = library
    engine = client.app.state.vidsearch.engine()
    calls = {"text": 0, "frames": 0}
    bb = engine.backbone
    orig_text, orig_frames = bb.encode_text, bb.encode_frames
    try:
        bb.encode_text = lambda t: (calls.__setitem__("text", calls["text"] + 1), orig_text(t))[1]
        bb.encode_frames = lambda f: (calls.__setitem__("frames", calls["frames"] + 1), orig_frames(f))[1]
        like = {"video_id": ids["bars"], "start": 1.0, "end": 4.0}
        body = client.post("/v1/search", json={"like": like, "top_k": 4}).json()
    finally:
        bb.encode_text, bb.encode_frames = orig_text, orig_frames
    assert calls == {"text": 0, "frames": 0}
    assert body["inputs"] == {"like": 1.0}
    found = [r["video"]["id"] for r in body["results"]]
    assert ids["bars"] not in found and len(found) == 3
    assert found[0] == ids["hd"]  # SMPTE HD bars look most like SMPTE bars
    # with the source kept, the source's own moment is the best match
    mine = client.post("/v1/search", json={"like": {**like, "include_source": True}, "top_k": 1, "group_by": "moment"}).json()
    top = mine["results"][0]
    assert top["video"]["id"] == ids["bars"] and top["moments"][0]["start"] < 4.0 and top["moments"][0]["end"] > 1.0
    for bad, why in (({"video_id": "nope"}, "not an indexed video"), ({"video_id": ids["bars"], "start": 50, "end": 60}, "holds no indexed frames")):
        resp = client.post("/v1/search", json={"like": bad})
        assert resp.status_code == 400 and why in resp.json()["detail"]


def test_client_methods_upload_and_compose(library, ids, rgb_frame, tmp_path):
    settings, _ = library
    picture = tmp_path / "frame.png"
    picture.write_bytes(rgb_frame)
    with VidsearchClient(LOCAL_URL, transport=AppTransport(create_app(settings))) as vs:
        by_path = vs.search(image=picture, top_k=2)
        by_bytes = vs.search("colour bars", image=rgb_frame, query_weights={"text": 0.5})
        more = vs.more_like(ids["bars"], 1.0, 4.0, top_k=2)
        composed = vs.more_like(ids["bars"], 1.0, 4.0, query="a test pattern")
    assert by_path.results[0].video.id == ids["rgb"] and by_path.inputs == {"image": 1.0}
    assert by_bytes.inputs == {"text": pytest.approx(1 / 3, abs=1e-5), "image": pytest.approx(2 / 3, abs=1e-5)}
    assert more.inputs == {"like": 1.0} and ids["bars"] not in [r.video.id for r in more.results]
    assert composed.inputs == {"text": 0.5, "like": 0.5}


def test_cli_search_by_image_and_like(library, ids, rgb_frame, tmp_path):
    from typer.testing import CliRunner

    from vidsearch.cli import app

    settings, _ = library
    picture = tmp_path / "frame.png"
    picture.write_bytes(rgb_frame)
    run = CliRunner().invoke
    got = run(app, ["search", "--db", str(settings.db), "--image", str(picture), "--json", "-k", "2"])
    assert got.exit_code == 0, got.output
    body = json.loads(got.stdout.splitlines()[-1])
    assert body["inputs"] == {"image": 1.0} and body["results"][0]["video"]["id"] == ids["rgb"]
    got = run(app, ["search", "--db", str(settings.db), "--like", f"{ids['bars']}@1-4", "--weight", "like=2", "bars", "--json"])
    assert got.exit_code == 0, got.output
    body = json.loads(got.stdout.splitlines()[-1])
    assert body["inputs"] == {"text": pytest.approx(1 / 3, abs=1e-5), "like": pytest.approx(2 / 3, abs=1e-5)}
    assert ids["bars"] not in [r["video"]["id"] for r in body["results"]]
    bad = run(app, ["search", "--db", str(settings.db), "--like", f"{ids['bars']}@x-y"])
    assert bad.exit_code != 0 and "VIDEO_ID@START-END" in bad.output
    missing = run(app, ["search", "--db", str(settings.db), "--image", str(tmp_path / "nope.jpg")])
    assert missing.exit_code != 0 and "no such file" in missing.output
