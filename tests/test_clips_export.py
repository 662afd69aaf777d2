"""Moments people take away: clips cut by the API (copy or re-encode, bounded, 4xx for bad ranges),
share links, and edit decision lists (OpenTimelineIO, CMX 3600) from the API and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import opentimelineio as otio
import pytest
from fastapi.testclient import TestClient

from api_fixtures import API_KEY
from media import make_clip
from vidsearch.server import create_app
from vidsearch.server.clips import MAX_CLIP_SECONDS, check_range, ClipError, cut_clip, keyframe_at


@pytest.fixture(scope="module")
def client(shared_library):
    settings, _ = shared_library
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture(scope="module")
def ids(client) -> dict[str, str]:
    return {v["title"]: v["id"] for v in client.get("/v1/videos").json()["videos"]}


def probe_duration(path) -> float:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return float(out)


def test_keyframes_decide_copy_or_encode(tmp_path):
    video = make_clip(tmp_path / "gop.mp4", seconds=6, rate=10, extra=("-g", "10", "-keyint_min", "10", "-sc_threshold", "0"))
    assert keyframe_at(video, 2.0) and keyframe_at(video, 0.0)
    assert not keyframe_at(video, 2.5)
    copied = cut_clip(video, "v", 2.0, 4.0, tmp_path)
    encoded = cut_clip(video, "v", 2.5, 4.0, tmp_path)
    assert copied.method == "copy" and encoded.method == "encode"
    assert abs(probe_duration(copied.path) - 2.0) < 0.15
    assert abs(probe_duration(encoded.path) - 1.5) < 0.15
    assert cut_clip(video, "v", 2.5, 4.0, tmp_path).path == encoded.path  # cached


def test_ranges_are_checked():
    assert check_range(1.0, 10.1, 10.0) == (1.0, 10.0)  # a rounded end a little past the video is clamped
    for start, end, words in ((5.0, 5.0, "must be after"), (10.0, 12.0, "past the end"), (1.0, 11.0, "past the end"),
                              (0.0, MAX_CLIP_SECONDS + 1, "at most")):  # fmt: skip
        with pytest.raises(ClipError, match=words):
            check_range(start, end, 10.0 if end < 100 else 1e4)


def test_clip_endpoint(client, ids):
    hd = ids["The hd clip"]  # 10 s, one keyframe at 0 (x264's default GOP)
    whole = client.get(f"/v1/videos/{hd}/clip", params={"start": 0, "end": 3})
    assert whole.status_code == 200 and whole.headers["x-clip-method"] == "copy"
    assert whole.headers["content-type"] == "video/mp4" and whole.content[4:8] == b"ftyp"
    mid = client.get(f"/v1/videos/{hd}/clip", params={"start": 2.3, "end": 4.8})
    assert mid.status_code == 200 and mid.headers["x-clip-method"] == "encode"
    # served again: the same validators (a use of the cached file changed its ETag), 304 on them,
    # HEAD as GET, and a range a millisecond off is the same cached clip
    again = client.get(f"/v1/videos/{hd}/clip", params={"start": 2.3, "end": 4.8})
    assert again.headers["etag"] == mid.headers["etag"] and again.headers["last-modified"] == mid.headers["last-modified"]
    assert client.get(f"/v1/videos/{hd}/clip", params={"start": 2.3, "end": 4.8}, headers={"If-None-Match": mid.headers["etag"]}).status_code == 304
    head = client.head(f"/v1/videos/{hd}/clip", params={"start": 2.3, "end": 4.8})
    assert head.status_code == 200 and head.headers["content-length"] == mid.headers["content-length"] and not head.content
    near = client.get(f"/v1/videos/{hd}/clip", params={"start": 2.301, "end": 4.799})
    assert near.headers["etag"] == mid.headers["etag"]
    for params, code, words in (({"start": 5, "end": 4}, 400, "must be after"), ({"start": 11, "end": 12}, 400, "past the end"),
                                ({"start": 1, "end": 30}, 400, "past the end"), ({"start": -1, "end": 2}, 422, "start"),
                                ({"start": 1}, 422, "end")):  # fmt: skip
        resp = client.get(f"/v1/videos/{hd}/clip", params=params)
        assert resp.status_code == code and words in resp.json()["detail"], (params, resp.text)
    assert client.get("/v1/videos/nope/clip", params={"start": 0, "end": 1}).status_code == 404


def test_results_link_their_clip_and_ui_moment(client):
    r = client.post("/v1/search", json={"query": "colour bars", "top_k": 1}).json()["results"][0]
    m = r["moments"][0]
    assert r["links"]["clip"] == f"/v1/videos/{r['video']['id']}/clip?start={m['start']:.3f}&end={m['end']:.3f}"
    assert r["links"]["ui"].startswith(f"?video={r['video']['id']}&t=")
    assert m["start"] <= m["best"] <= m["end"]  # the thumbnail is taken where the moment is most relevant
    assert r["links"]["thumbnail"].endswith(f"t={m['best']:.2f}")
    assert client.get(r["links"]["clip"]).status_code == 200


def test_export_otio_and_edl_from_the_api(client, ids):
    items = [{"video_id": ids["The hd clip"], "start": 2.0, "end": 4.5}, {"video_id": ids["The bars clip"], "start": 0.4, "end": 7.9, "name": "bars"}]
    resp = client.post("/v1/export", json={"items": items, "format": "otio", "fps": 25, "padding": 0.5})
    assert resp.status_code == 200 and "attachment" in resp.headers["content-disposition"]
    timeline = otio.adapters.read_from_string(resp.text, "otio_json")
    clips = list(timeline.find_clips())
    assert [c.name for c in clips] == ["The hd clip", "bars"]
    ranges = [(c.source_range.start_time.to_seconds(), c.source_range.end_time_exclusive().to_seconds()) for c in clips]
    assert ranges[0] == pytest.approx((37 / 25, 5.0)) and ranges[1] == pytest.approx((0.0, 8.0))  # padded, rounded out to frames, kept inside the 8 s video
    assert clips[0].media_reference.target_url == "media/hd.mp4"  # an anonymous reader: relative to its library root (exposure.py)
    edl = client.post("/v1/export", json={"items": items, "format": "edl", "fps": 25})
    assert edl.status_code == 200 and "00:00:02:00 00:00:04:13" in edl.text  # 2.0 s to 4.5 s (frame 112.5 rounds out)
    back = otio.adapters.read_from_string(edl.text, "cmx_3600", rate=25)
    assert len(list(back.find_clips())) == 2
    assert client.post("/v1/export", json={"items": [{"video_id": "nope", "start": 0, "end": 1}]}).status_code == 404
    assert client.post("/v1/export", json={"items": [{"video_id": ids["The hd clip"], "start": 3, "end": 2}]}).status_code == 422
    assert client.post("/v1/export", json={"items": []}).status_code == 422


def test_export_rejects_frame_rates_edl_cannot_write(client, ids):
    """CMX 3600 timecodes exist at a few rates only (OpenTimelineIO refuses others, or writes garbage
    below 1 fps): a 422 naming them, never a 500 (which also cost the client its connection)."""
    item = [{"video_id": ids["The hd clip"], "start": 0, "end": 2}]
    for fps in (7, 100, 240, 26, 0.001, 0.5):
        resp = client.post("/v1/export", json={"items": item, "format": "edl", "fps": fps})
        assert resp.status_code == 422, (fps, resp.status_code, resp.text)
        detail = resp.json()["detail"]
        assert "fps" in detail and (("23.976" in detail and "59.94" in detail and "60" in detail) or "greater than or equal to 1" in detail), (fps, detail)
    for fps in (0, 0.001, 0.5, -1):  # every format has a lower bound
        resp = client.post("/v1/export", json={"items": item, "format": "otio", "fps": fps})
        assert resp.status_code == 422 and "fps" in resp.json()["detail"], (fps, resp.text)
    for fps, first in ((23.976, "00:00:00:00"), (23.98, "00:00:00:00"), (24, "00:00:00:00"), (29.97, "00:00:00;00"), (30, "00:00:00:00"),
                       (48, "00:00:00:00"), (50, "00:00:00:00"), (59.94, "00:00:00;00"), (60, "00:00:00:00")):  # fmt: skip
        resp = client.post("/v1/export", json={"items": item, "format": "edl", "fps": fps})
        assert resp.status_code == 200 and first in resp.text, (fps, resp.text)
    for fps in (7, 100, 240, 12.5):  # any rate suits an OTIO timeline
        assert client.post("/v1/export", json={"items": item, "format": "otio", "fps": fps}).status_code == 200


def test_writer_errors_are_not_500(monkeypatch, client, ids):
    """A ValueError from the writer is the request's problem: 400 with its reason (not an unhandled 500)."""
    import opentimelineio.adapters

    def broken(*args, **kwargs):
        raise ValueError("SMPTE timecode does not support this rate")

    monkeypatch.setattr(opentimelineio.adapters, "write_to_string", broken)
    resp = client.post("/v1/export", json={"items": [{"video_id": ids["The hd clip"], "start": 0, "end": 2}], "format": "edl", "fps": 25})
    assert resp.status_code == 400 and "SMPTE timecode does not support this rate" in resp.json()["detail"], resp.text


def test_export_shows_paths_as_other_reads_do(client, ids):
    """No server path for a reader without a key (as GET /v1/videos/ID); a keyed reader gets the file's URL."""
    hd = ids["The hd clip"]
    item = [{"video_id": hd, "start": 0, "end": 2}]
    anonymous_uri = client.get(f"/v1/videos/{hd}").json()["uri"]
    keyed_uri = client.get(f"/v1/videos/{hd}", headers={"Authorization": f"Bearer {API_KEY}"}).json()["uri"]
    assert anonymous_uri == "media/hd.mp4" and keyed_uri.startswith("/")
    for fmt in ("otio", "edl"):
        text = client.post("/v1/export", json={"items": item, "format": fmt}).text
        assert keyed_uri not in text and "file://" not in text and anonymous_uri in text, (fmt, text)
        keyed = client.post("/v1/export", json={"items": item, "format": fmt}, headers={"Authorization": f"Bearer {API_KEY}"}).text
        assert f"file://{keyed_uri}" in keyed, (fmt, keyed)
    otio_text = client.post("/v1/export", json={"items": item}).text
    assert otio.adapters.read_from_string(otio_text, "otio_json").find_clips()[0].media_reference.target_url == anonymous_uri


def test_control_characters_cannot_add_lines(client, ids):
    """Names and titles are written on one line each: a newline in them (a user's, or a title taken from
    a file name) cannot add EDL lines such as `* FROM CLIP NAME:` or `FCM: DROP FRAME`."""
    hd = ids["The hd clip"]
    evil = "a\nb\r\n* FROM CLIP NAME: evil\x0b\x0c\x1c\x85\u2028\u2029\x00z"
    body = {"items": [{"video_id": hd, "start": 0, "end": 2, "name": evil}], "title": "T\r\nFCM: DROP FRAME", "fps": 25}
    edl = client.post("/v1/export", json={**body, "format": "edl"})
    assert edl.status_code == 200, edl.text
    lines = edl.text.splitlines()
    assert not any(line.startswith("FCM: DROP") or line.startswith("* FROM CLIP NAME: evil") for line in lines), lines
    assert lines[0] == "TITLE: T  FCM: DROP FRAME"
    assert "* FROM CLIP NAME:  a b  * FROM CLIP NAME: evil" in edl.text
    assert not any(c in edl.text.replace("\n", "") for c in "\r\x0b\x0c\x1c\x85\u2028\u2029\x00")
    clips = list(otio.adapters.read_from_string(edl.text, "cmx_3600", rate=25).find_clips())
    assert len(clips) == 1
    timeline = otio.adapters.read_from_string(client.post("/v1/export", json={**body, "format": "otio"}).text, "otio_json")
    assert timeline.name == "T  FCM: DROP FRAME"
    name = timeline.find_clips()[0].name
    assert name.startswith("a b  * FROM CLIP NAME: evil") and not any(ch.isspace() and ch != " " for ch in name) and "\x00" not in name


def test_export_request_is_strict(client, ids):
    """Unknown fields are refused (as search and jobs refuse them); NaN and infinity are named as such."""
    item = {"video_id": ids["The hd clip"], "start": 0, "end": 2}
    for body, words in (({"items": [item], "fmt": "edl"}, "fmt"), ({"items": [{**item, "label": "x"}]}, "label"),
                        ({"items": [item], "fps": float("nan")}, "finite"), ({"items": [item], "fps": float("inf")}, "finite"),
                        ({"items": [item], "padding": float("nan")}, "finite"), ({"items": [item], "padding": float("-inf")}, "finite")):  # fmt: skip
        resp = client.post("/v1/export", content=json.dumps(body), headers={"content-type": "application/json"})
        assert resp.status_code == 422 and words in resp.json()["detail"], (body, resp.text)
        assert "less than or equal" not in resp.json()["detail"] or words != "finite", resp.text
    # CMX 3600 numbers events with 3 digits: a 1000th shifted the fixed columns
    many = client.post("/v1/export", json={"items": [item] * 1000, "format": "edl"})
    assert many.status_code == 422 and "at most 999" in many.json()["detail"]
    assert client.post("/v1/export", json={"items": [item] * 1000, "format": "otio"}).status_code == 200


@pytest.mark.slow
def test_cli_search_exports_moments(shared_library, tmp_path):
    settings, _ = shared_library
    target = tmp_path / "results.otio"
    proc = subprocess.run([sys.executable, "-m", "vidsearch.cli", "search", "colour bars", "--db", str(settings.db), "-k", "3",
                           "--export", str(target), "--padding", "0.25", "--json"], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout)["results"]
    clips = list(otio.adapters.read_from_file(str(target)).find_clips())
    assert [c.metadata["vidsearch"]["video_id"] for c in clips] == [r["video"]["id"] for r in results]
    for c, r in zip(clips, results):
        m = r["moments"][0]
        start, end = c.source_range.start_time.to_seconds(), c.source_range.end_time_exclusive().to_seconds()
        assert start <= max(0.0, m["start"] - 0.25) + 1e-9 and start > m["start"] - 0.25 - 0.04
        assert end >= min(r["video"]["duration"], m["end"] + 0.25) - 1e-9
    bad = subprocess.run([sys.executable, "-m", "vidsearch.cli", "search", "x", "--db", str(settings.db), "--export", str(tmp_path / "a.mov")],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and ".otio or .edl" in bad.stdout + bad.stderr
    # a rate no EDL counts in is refused before the search (it was a traceback after it)
    rate = subprocess.run([sys.executable, "-m", "vidsearch.cli", "search", "x", "--db", str(settings.db), "--export", str(tmp_path / "a.edl"),
                           "--fps", "100"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert rate.returncode == 2 and "29.97" in rate.stdout + rate.stderr and "Traceback" not in rate.stderr
