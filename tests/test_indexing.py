"""The indexing pipeline on real ffmpeg-made media and a real LanceDB directory."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from media import make_clip
from vidsearch.config import Settings
from vidsearch.fingerprint import Fingerprint, FingerprintMismatch
from vidsearch.indexer.pipeline import IndexRun, open_store_for
from vidsearch.store import Store


class CountingBackbone:
    """The real tiny backbone, counting the frames it is asked to encode."""

    def __init__(self, inner):
        self.inner = inner
        self.frames = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode_units(self, frames, *args, **kw):
        self.frames += len(frames)
        return self.inner.encode_units(frames, *args, **kw)


def index(db, paths, backbone, prune=False, **overrides):
    settings = Settings(db=db, model="tiny", pretrained="none", **{"speech": False, "ocr": False, **overrides})
    spy = CountingBackbone(backbone)
    store = open_store_for(settings, spy)
    summary = IndexRun(store, spy, settings).run(list(paths), prune=prune)
    return summary, store, spy


def rows_for(store: Store, table: str, video_id: str) -> int:
    return store.table(table).count_rows(f"video_id = '{video_id}'")


@pytest.fixture(scope="module")
def awkward_index(tmp_path_factory, awkward_library, tiny_backbone):
    db = tmp_path_factory.mktemp("awkward_db") / "db"
    root = awkward_library["normal"].parent
    summary, store, spy = index(db, [root], tiny_backbone)
    return summary, store, spy


def test_bad_input_never_stops_the_run(awkward_index, awkward_library):
    summary, store, _ = awkward_index
    videos = store.videos()
    by_path = dict(zip(videos["path"].to_pylist(), videos.to_pylist()))
    good = ["normal", "no_audio", "non_ascii", "one_frame", "four_k", "vfr"]
    for name in good:
        assert str(awkward_library[name].resolve()) in by_path, f"{name} was not indexed"
    failures = {f["path"]: f["error"] for f in store.stats()["failures"]}
    expected = {
        "empty": "empty file",
        "text": "not a readable video",
        "audio_only": "no video stream (audio-only",
        "truncated": "not a readable video",
    }
    for name, words in expected.items():
        path = str(awkward_library[name].resolve())
        assert path in failures, f"{name} not listed as failed"
        assert words in failures[path], failures[path]
    assert summary.indexed == len(good) and summary.failed == len(expected)


def test_indexed_videos_have_correct_properties(awkward_index, awkward_library):
    _, store, _ = awkward_index
    rows = {r["path"]: r for r in store.videos().to_pylist()}
    normal = rows[str(awkward_library["normal"].resolve())]
    assert normal["duration"] == pytest.approx(6.0, abs=0.1)
    assert normal["has_audio"] and normal["n_units"] == 6 and normal["width"] == 320
    assert not rows[str(awkward_library["no_audio"].resolve())]["has_audio"]
    assert rows[str(awkward_library["one_frame"].resolve())]["n_units"] == 1
    four_k = rows[str(awkward_library["four_k"].resolve())]
    assert (four_k["width"], four_k["height"]) == (3840, 2160)
    start, end, vecs = store.features(normal["video_id"])
    assert vecs.shape == (6, 256)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(start, np.arange(6)), np.testing.assert_allclose(end, np.arange(1, 7))
    segs = store.segments().filter(pc.equal(store.segments()["video_id"], normal["video_id"])).to_pylist()
    kinds = [s["kind"] for s in segs]
    assert kinds.count("video") == 1 and kinds.count("window") == 2  # [0,4] and [2,6]
    assert all(s["fingerprint"] == store.fingerprint.id for s in segs)


def test_variable_frame_rate_is_sampled_by_time(awkward_index, awkward_library):
    """Red for 2 s at 30 fps, then blue for 2 s at 5 fps: the cut must land at 2.0 s, not at frame 60's 'time'."""
    _, store, _ = awkward_index
    row = {r["path"]: r for r in store.videos().to_pylist()}[str(awkward_library["vfr"].resolve())]
    vid = row["video_id"]
    segs = store.segments().filter(pc.equal(store.segments()["video_id"], vid))
    shots = segs.filter(pc.equal(segs["kind"], "shot")).sort_by("start").to_pylist()
    assert row["duration"] == pytest.approx(4.0, abs=0.25)
    assert [(s["start"], s["end"]) for s in shots] == [(0.0, 2.0), (2.0, row["duration"])]


def test_unchanged_library_does_no_encoding(awkward_index, awkward_library, tiny_backbone):
    _, store, _ = awkward_index
    summary, _, spy = index(store.path, [awkward_library["normal"].parent], tiny_backbone)
    assert spy.frames == 0
    assert summary.indexed == 0 and summary.failed == 0 and summary.skipped == 10


def test_fingerprint_mismatch_is_a_clear_error(awkward_index):
    _, store, _ = awkward_index
    other = Fingerprint(model="ViT-B-32", weights="pretrained:laion2b_s34b_b79k", dim=512)
    with pytest.raises(FingerprintMismatch) as exc:
        Store.open(store.path, other)
    assert "tiny" in str(exc.value) and "vidsearch reindex" in str(exc.value) and "--rebuild" in str(exc.value)


def test_same_content_at_two_paths_is_one_video(tmp_path, tiny_backbone):
    a = make_clip(tmp_path / "lib" / "a.mp4", seconds=2, audio_hz=None)
    shutil.copy(a, tmp_path / "lib" / "copy of a.mp4")
    summary, store, spy = index(tmp_path / "db", [tmp_path / "lib"], tiny_backbone)
    assert summary.indexed == 1 and summary.linked == 1 and spy.frames == 2
    assert store.videos().num_rows == 1 and store.files().num_rows == 2


def test_reindex_picks_up_added_changed_and_removed(tmp_path, tiny_backbone):
    lib = tmp_path / "lib"
    keep = make_clip(lib / "keep.mp4", seconds=2, source="testsrc", audio_hz=None)
    change = make_clip(lib / "change.mp4", seconds=2, source="smptebars", audio_hz=None)
    remove = make_clip(lib / "remove.mp4", seconds=2, source="rgbtestsrc", audio_hz=None)
    _, store, _ = index(tmp_path / "db", [lib], tiny_backbone)
    ids = {r["path"]: r["video_id"] for r in store.videos().to_pylist()}
    removed_id, changed_id = ids[str(remove.resolve())], ids[str(change.resolve())]

    remove.unlink()
    make_clip(change, seconds=3, source="smptehdbars", audio_hz=None)
    make_clip(lib / "added.mp4", seconds=2, source="testsrc2", audio_hz=None)
    summary, store, spy = index(tmp_path / "db", [lib], tiny_backbone, prune=True)

    assert summary.indexed == 2 and summary.skipped == 1 and summary.removed == 2  # removed + old content
    assert spy.frames == 3 + 2
    paths = set(store.videos()["path"].to_pylist())
    assert paths == {str(p.resolve()) for p in (keep, change, lib / "added.mp4")}
    for gone in (removed_id, changed_id):
        for table in ("videos", "segments", "video_features", "files"):
            assert rows_for(store, table, gone) == 0, (table, gone)


def test_delete_removes_from_every_table(tmp_path, tiny_backbone):
    clip = make_clip(tmp_path / "lib" / "x.mp4", seconds=2, audio_hz=None)
    _, store, _ = index(tmp_path / "db", [clip], tiny_backbone)
    vid = store.videos()["video_id"][0].as_py()
    assert store.delete_videos([vid]) == 1
    for table in ("videos", "segments", "video_features", "files"):
        assert rows_for(store, table, vid) == 0


def test_manifest_titles_metadata_and_bad_lines(tmp_path, tiny_backbone):
    import json

    clip = make_clip(tmp_path / "media" / "talk.mp4", seconds=2, audio_hz=None)
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(
        json.dumps({"video": "media/talk.mp4", "title": "Quarterly talk", "metadata": {"year": 2024}})
        + "\n{not json\n"
        + json.dumps({"video": "media/missing.mp4"})
        + "\n"
        + json.dumps({"video": "s3://bucket/x.mp4"})
        + "\n"
    )
    summary, store, _ = index(tmp_path / "db", [manifest], tiny_backbone)
    row = store.videos().to_pylist()[0]
    assert row["title"] == "Quarterly talk" and json.loads(row["metadata"]) == {"year": 2024}
    assert row["path"] == str(clip.resolve())
    problems = {f["path"]: f["error"] for f in store.stats()["failures"]}
    assert "not valid JSON" in problems[f"{manifest}:2"]
    assert "does not exist" in problems[f"{manifest}:3"]
    assert "unsupported URI scheme 's3://'" in problems[f"{manifest}:4"]


def test_orphans_of_a_killed_run_are_removed(tmp_path, tiny_backbone):
    """Rows written before the visibility row (a run killed mid-commit) vanish on the next run."""
    clip = make_clip(tmp_path / "lib" / "x.mp4", seconds=2, audio_hz=None)
    _, store, _ = index(tmp_path / "db", [clip], tiny_backbone)
    vid = store.videos()["video_id"][0].as_py()
    store.table("videos").delete(f"video_id = '{vid}'")  # as if killed before marking it visible
    store.table("files").delete("true")
    summary, store, _ = index(tmp_path / "db", [clip], tiny_backbone)
    assert summary.indexed == 1
    for table in ("videos", "video_features"):
        assert rows_for(store, table, vid) == 1
    assert rows_for(store, "segments", vid) == store.segments().num_rows
    assert len(set(store.segments()["segment_id"].to_pylist())) == store.segments().num_rows


def test_a_decoder_crash_or_hang_costs_one_file_not_the_run(tmp_path, monkeypatch):
    import threading

    from vidsearch.indexer.prepare import DecodeJob, Failed, Prepared
    from vidsearch.indexer.worker import DecoderPool, DecoderProcess

    blocking = _blocking_probe(tmp_path, monkeypatch)
    small = make_clip(tmp_path / "small.mp4", seconds=2, audio_hz=None)

    crash = blocking("crash")
    worker = DecoderProcess()
    result = []
    running = threading.Thread(target=lambda: result.append(worker.run(DecodeJob(str(crash.video), 1.0, 224, False), timeout=120)))
    running.start()
    with crash.busy():  # the worker is inside the file: kill it, as if the native decoder segfaulted
        worker.proc.kill()
    running.join(60)
    assert isinstance(result[0], Failed) and "decoder crashed" in result[0].error and "signal 9" in result[0].error
    worker.close()

    worker = DecoderProcess()
    hung = worker.run(DecodeJob(str(blocking("hang").video), 1.0, 224, False), timeout=0.5)  # never answers
    assert isinstance(hung, Failed) and "longer than" in hung.error and not worker.alive
    worker.close()

    pool = DecoderPool(1)  # a crash inside the pool fails that file only; the next file decodes
    doomed_file = blocking("doomed")
    try:
        doomed = pool.submit(DecodeJob(str(doomed_file.video), 1.0, 224, False))
        with doomed_file.busy():
            for pid in _decoder_children():
                os.kill(pid, signal.SIGKILL)
        assert "decoder crashed" in doomed.result(timeout=60).error
        after = pool.submit(DecodeJob(str(small), 1.0, 224, False)).result(timeout=60)
        assert isinstance(after, Prepared) and len(after.frames.frames) == 2
    finally:
        pool.shutdown()


class _Blocked:
    """A video whose probe blocks on its own FIFO until the test lets it go (see _blocking_probe)."""

    def __init__(self, video: Path):
        self.video, self.fifo = video, video.with_suffix(".fifo")
        os.mkfifo(self.fifo)

    @contextlib.contextmanager
    def busy(self):
        """Enters once a decoder is blocked on this file (opening a FIFO for writing waits for its
        reader), and lets the probe go on exit."""
        with open(self.fifo, "wb"):
            yield


def _blocking_probe(tmp_path: Path, monkeypatch):
    """Decoder processes find an `ffprobe` first on PATH that, for a `*.block.mp4` file, first reads
    that file's FIFO (so it blocks until the test writes to it, or 60 s) and then runs the real one.
    Nothing depends on timing: the test knows a worker is busy with the file when the write end opens."""
    import stat

    real = shutil.which("ffprobe")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "ffprobe"
    script.write_text(
        "#!/bin/sh\n"
        'for a; do case "$a" in *.block.mp4) timeout 60 cat "${a%.mp4}.fifo" > /dev/null;; esac; done\n'
        f'exec "{real}" "$@"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return lambda name: _Blocked(make_clip(tmp_path / f"{name}.block.mp4", seconds=1, audio_hz=None))


def _decoder_children() -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmd = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and b"vidsearch.indexer.worker" in cmd:
            pids.append(int(stat.parent.name))
    assert pids, "no decoder process found"
    return pids
