"""The media zoo (tests/zoo.py) indexed in one run with the shipped model and every channel on: each
file indexed correctly (player times, upright frames) or reported with its reason, and nothing lost."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow.compute as pc
import pytest

from vidsearch.indexer.decode import _iter_pyav, DecodeReport, plan_samples
from vidsearch.indexer.prepare import DecodeJob, Prepared, prepare
from vidsearch.indexer.probe import probe
from vidsearch.store import Store

pytestmark = pytest.mark.slow


def _status(db) -> dict:
    proc = subprocess.run([sys.executable, "-m", "vidsearch.cli", "status", "--db", str(db), "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_every_zoo_file_is_indexed_or_reported_in_one_run(zoo, zoo_index):
    db, summary = zoo_index
    status = _status(db)
    store = Store.open(db)
    videos = {r["path"]: r for r in store.videos().to_pylist()}
    files = {r["path"]: r for r in store.files().to_pylist()}
    failures = {f["path"]: f["error"] for f in status["failures"]}
    warnings = {w["path"]: w["warning"] for w in status["warnings"]}
    for name, z in zoo.files.items():
        key = str(z.path)
        if z.expect == "absent":
            assert key not in files, f"{name}: {files.get(key)}"
            continue
        if z.expect == "failed":
            assert key in failures, f"{name} not listed as failed"
            assert z.words in failures[key], f"{name}: {failures[key]}"
            assert key not in videos
            continue
        row = files.get(key)
        assert row is not None and row["status"] == "indexed", f"{name}: {row}"
        assert row["video_id"] in store.indexed_ids(), f"{name}: its files row points at no video"
        if z.expect == "warning":
            assert z.words in warnings.get(key, ""), f"{name}: {warnings.get(key)}"
        else:
            assert key not in warnings, f"{name}: unexpected warning {warnings[key]}"
    # the run's own summary agrees with what status lists
    assert summary["failed"] == len(failures)
    assert summary["indexed"] + summary["linked"] == sum(1 for z in zoo.files.values() if z.expect in ("indexed", "warning"))


def _video(store, path) -> dict:
    vid = {r["path"]: r for r in store.files().to_pylist()}[str(path)]["video_id"]
    return store.video_rows(vid)[0]


def _shot_starts(store, video_id) -> list[float]:
    segs = store.segments(["video_id", "kind", "start"])
    segs = segs.filter(pc.and_(pc.equal(segs["video_id"], video_id), pc.equal(segs["kind"], "shot")))
    return sorted(round(x, 2) for x in segs["start"].to_pylist())


def test_times_are_player_times_and_sizes_are_displayed(zoo, zoo_index):
    """Each clip cuts from red to blue at `cut` seconds as a player shows them: the shot boundary lands
    there whatever the codec, container or timestamp offset (the transport stream starts 10 s in, the
    MP4/MKV 10 hours in, the `-ss -c copy` trims hide 2 s before their first shown frame)."""
    store = Store.open(zoo_index[0])
    checked = 0
    for name, z in zoo.files.items():
        if z.expect not in ("indexed", "warning"):
            continue
        row = _video(store, z.path)
        if z.duration is not None:
            assert row["duration"] == pytest.approx(z.duration, abs=0.15), name
        if z.size is not None:
            assert (row["width"], row["height"]) == z.size, name
        if z.has_audio is not None:
            assert row["has_audio"] == z.has_audio, name
        starts, ends, _ = store.features(row["video_id"])
        assert starts.min() >= 0 and ends.max() <= row["duration"] + 1e-3, name
        if z.cut is not None:
            assert z.cut in _shot_starts(store, row["video_id"]), (name, _shot_starts(store, row["video_id"]))
            checked += 1
    assert checked >= 25


def test_a_damaged_stretch_costs_that_stretch_and_a_truncated_file_its_tail(zoo, zoo_index):
    store = Store.open(zoo_index[0])
    corrupt = _video(store, zoo.files["corrupt_middle"].path)
    starts, ends, _ = store.features(corrupt["video_id"])
    warning = {w["path"]: w["warning"] for w in store.stats()["warnings"]}[str(zoo.files["corrupt_middle"].path)]
    lost = [tuple(float(x) for x in part.split("-")) for part in warning.split("frames at ")[1].split(" s could")[0].split(" s, ")]
    assert len(lost) >= 1
    for a, b in lost:  # no unit stands for the lost stretch; units exist before and after it
        assert not np.any(((starts + ends) / 2 > a) & ((starts + ends) / 2 < b)), (a, b, starts)
    assert starts.min() < lost[0][0] and ends.max() > lost[-1][1] + 2
    for name in ("truncated_with_moov", "truncated_mkv"):
        truncated = _video(store, zoo.files[name].path)
        _, ends, _ = store.features(truncated["video_id"])
        assert truncated["duration"] == pytest.approx(10.0, abs=0.1), name  # what a player shows ...
        assert ends.max() <= 5.5, name  # ... but only what decodes is indexed (the last frame stood for 8 s more)


def test_a_subtitle_named_but_for_letter_case_is_read(zoo, zoo_index):
    """`Holiday.mp4` + `holiday.srt`: players on Windows and macOS pair them, so the index does too."""
    store = Store.open(zoo_index[0])
    z = zoo.files["case_subtitle"]
    spans = store.span_rows(_video(store, z.path)["video_id"], "subtitle")
    assert [s["text"] for s in spans] == [z.extra["subtitle"]]


def test_closed_captions_are_read(zoo, zoo_index):
    """A TV recording's captions ride in its pictures (CEA-608 in the H.264 user data) and a QuickTime
    movie's in a c608 track: both were ignored, so a recorded programme's dialogue was not searchable
    unless speech recognition heard it."""
    store = Store.open(zoo_index[0])
    for name, near in (("captions_in_pictures", 1.0), ("caption_track_mov", 1.0)):
        z = zoo.files[name]
        spans = store.span_rows(_video(store, z.path)["video_id"], "subtitle")
        assert [s["text"] for s in spans] == [z.extra["subtitle"]], (name, spans)
        assert near <= spans[0]["start"] <= near + 1.0 and spans[0]["end"] > spans[0]["start"], (name, spans)


def test_symlinks_are_listed_under_their_own_names(zoo, zoo_index):
    store = Store.open(zoo_index[0])
    files = {r["path"]: r for r in store.files().to_pylist()}
    alias, target = files[str(zoo.files["symlink_inside"].path)], files[str(zoo.files["h264_aac_mp4"].path)]
    assert alias["status"] == target["status"] == "indexed" and alias["video_id"] == target["video_id"]
    assert not any(str(zoo.outside) in p for p in files), "a link out of the library was followed or listed by its target"
    assert str(zoo.files["symlink_to_failed"].path) in files  # listed where the operator sees it


def test_rotated_phone_video_is_encoded_upright(zoo):
    """Coded 160x120 with red on top and a 90-degree display matrix: upright, the frames are 120 wide
    and 160 tall with red on the left. Both decoders must deliver them so, and so must the decode
    that OCR shares with the encoder (whole frames, then scaled and cropped)."""
    path = zoo.files["rotated_phone"].path
    info = probe(path)
    assert (info.width, info.height, info.rotation) == (120, 160, 90)
    prepared = prepare(DecodeJob(str(path), 1.0, 64))
    with_ocr = prepare(DecodeJob(str(path), 1.0, 64, ocr=True))
    assert isinstance(prepared, Prepared) and isinstance(with_ocr, Prepared)
    assert with_ocr.frames.frames.shape == prepared.frames.frames.shape
    report = DecodeReport()
    by_pyav = np.concatenate([c.frames for c in _iter_pyav(path, plan_samples(info.duration, 1.0), info, 64, False, report)])
    for frames in (prepared.frames.frames, with_ocr.frames.frames, by_pyav):
        left, right = frames[:, :, : frames.shape[2] // 4].mean(axis=(0, 1, 2)), frames[:, :, -frames.shape[2] // 4 :].mean(axis=(0, 1, 2))
        assert left[0] > 200 and left[2] < 60, left  # red on the left
        assert right[2] > 200 and right[0] < 60, right  # blue on the right
    assert by_pyav.shape[1] > by_pyav.shape[2]  # taller than wide, before any crop


def test_unchanged_zoo_is_skipped_and_reports_the_same(zoo, zoo_index, tmp_path):
    """A second run over the same folder decodes nothing and loses nothing from status."""
    db, _ = zoo_index
    before = _status(db)
    proc = subprocess.run([sys.executable, "-m", "vidsearch.cli", "index", str(zoo.library), "--db", str(db), "--model", "tiny", "--json"],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    again = json.loads(proc.stdout.splitlines()[-1])
    assert again["indexed"] == 0 and again["linked"] == 0 and again["units"] == 0
    after = _status(db)
    assert after["videos"] == before["videos"] and after["failures"] == before["failures"] and after["warnings"] == before["warnings"]


def test_ocr_on_a_very_wide_frame_costs_what_a_normal_frame_costs():
    """A 4000x16 strip with its short side taken to the detector's 320 px was an 80,000x320 input (46 s
    and 3.7 GB for one frame): the detector's input is bounded by its long side too."""
    from vidsearch.encoders.ocr_rapid import RapidTextReader

    reader = RapidTextReader(threads=1)
    det = reader.engine.text_det
    shapes = []
    infer = det.infer
    det.infer = lambda x: (shapes.append(x.shape), infer(x))[1]
    try:
        for shape in ((16, 4000), (2000, 16)):
            frame = np.zeros((*shape, 3), np.uint8)
            frame[:, : shape[1] // 2] = 255  # something to look at
            reader.read(frame)
    finally:
        del det.infer
    assert len(shapes) == 2
    for s in shapes:
        assert s[-1] * s[-2] <= 1400 * 400, shapes
