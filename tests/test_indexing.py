"""The indexing pipeline on real ffmpeg-made media and a real LanceDB directory."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
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


def test_delete_removes_from_every_table_and_lasts(tmp_path, tiny_backbone):
    """A deleted video is gone from every table and stays out of later runs over its folder, until
    the file is named again (or the folder is indexed with --restore)."""
    lib = tmp_path / "lib"
    clip = make_clip(lib / "x.mp4", seconds=2, audio_hz=None)
    make_clip(lib / "y.mp4", seconds=2, source="smptebars", audio_hz=None)
    _, store, _ = index(tmp_path / "db", [lib], tiny_backbone)
    vid = {r["path"]: r["video_id"] for r in store.videos().to_pylist()}[str(clip)]
    assert store.delete_videos([vid]) == 1
    for table in ("videos", "segments", "video_features"):
        assert rows_for(store, table, vid) == 0
    assert store.files().filter(pc.equal(store.files()["video_id"], vid))["status"].to_pylist() == ["deleted"]

    for prune in (False, True):  # index and reindex of the folder leave it out
        summary, store, spy = index(tmp_path / "db", [lib], tiny_backbone, prune=prune)
        assert summary.excluded == 1 and summary.indexed == 0 and spy.frames == 0 and store.videos().num_rows == 1
    assert store.stats()["excluded"] == [str(clip)]

    summary, store, _ = index(tmp_path / "db", [clip], tiny_backbone)  # named again: back
    assert summary.indexed + summary.linked == 1 and vid in store.indexed_ids()
    store.delete_videos([vid])
    settings = Settings(db=tmp_path / "db", model="tiny", pretrained="none", speech=False, ocr=False)
    summary = IndexRun(open_store_for(settings, tiny_backbone), tiny_backbone, settings).run([lib], restore=True)
    assert summary.indexed == 1 and vid in Store.open(tmp_path / "db").indexed_ids()


def test_deleting_a_copy_keeps_the_content_the_original_still_holds(tmp_path, tiny_backbone):
    a = make_clip(tmp_path / "lib" / "a.mp4", seconds=2, audio_hz=None)
    copy = shutil.copy(a, tmp_path / "lib" / "copy of a.mp4")
    _, store, _ = index(tmp_path / "db", [tmp_path / "lib"], tiny_backbone)
    assert store.videos().num_rows == 1 and store.files().num_rows == 2
    assert store.delete_paths([str(copy)]) == 0
    stats = store.stats()
    assert stats["videos"] == 1 and stats["files"] == 1 and stats["excluded"] == [str(copy)]
    assert store.delete_paths([str(a)]) == 1 and store.stats()["videos"] == 0


def test_a_copy_of_a_file_that_fails_fails_too(tmp_path, tiny_backbone):
    """The content hash of a file is claimed before it is decoded: a byte-identical copy must not be
    recorded as indexed when the original fails (there would be no video behind it)."""
    src = make_clip(tmp_path / "src.mp4", seconds=4, audio_hz=None)
    broken = tmp_path / "lib" / "a broken.mp4"
    broken.parent.mkdir()
    broken.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    shutil.copy(broken, tmp_path / "lib" / "b copy.mp4")
    summary, store, _ = index(tmp_path / "db", [tmp_path / "lib"], tiny_backbone)
    failures = {f["path"]: f["error"] for f in store.stats()["failures"]}
    assert summary.failed == 2 and summary.linked == 0 and set(store.files()["status"].to_pylist()) == {"failed"}
    assert "which failed: not a readable video" in failures[str(tmp_path / "lib" / "b copy.mp4")]


def test_mixed_soundtracks_commit_in_one_batch_with_the_shipped_model(tmp_path):
    """The reported failure: spoken clips and a silent slide video, the shipped model (with its audio
    tower), one commit batch. Every video is indexed; the silent one has no audio tokens."""
    from media import make_spoken_clip

    from vidsearch.encoders.backbone import load_backbone

    backbone = load_backbone("tiny")
    assert backbone.audio_tower is not None
    lib = tmp_path / "lib"
    for i, sentence in enumerate(["the revenue grew", "look at the chart", "thank you all"]):
        make_spoken_clip(lib / f"talk {i}.mp4", sentence, at=0.5, seconds=3.0)
    slides = make_clip(lib / "slides.mp4", seconds=3, source="smptebars", audio_hz=None)
    settings = Settings(db=tmp_path / "db", model="tiny", speech=False, ocr=False, flush_videos=16)
    summary = IndexRun(open_store_for(settings, backbone), backbone, settings).run([lib])
    store = Store.open(tmp_path / "db")
    assert summary.indexed == 4 and summary.failed == 0 and store.videos().num_rows == 4
    feats = store.table("video_features").to_arrow().to_pylist()
    by_id = {r["video_id"]: r for r in feats}
    paths = {r["video_id"]: r["path"] for r in store.videos().to_pylist()}
    for vid, row in by_id.items():
        n_audio = len(row["audio_vectors"])
        assert (n_audio == 0) == (paths[vid] == str(slides)), (paths[vid], n_audio)


class _FailingBackbone(CountingBackbone):
    """The tiny backbone, failing on any batch that holds a mostly red frame."""

    def encode_units(self, frames, *args, **kw):
        red = (frames[..., 0].mean(axis=(1, 2)) > 200) & (frames[..., 2].mean(axis=(1, 2)) < 50)
        if red.any():
            raise RuntimeError("simulated encoder fault")
        return super().encode_units(frames, *args, **kw)


def test_a_video_that_breaks_a_shared_batch_or_commit_fails_alone(tmp_path, tiny_backbone, monkeypatch):
    lib = tmp_path / "lib"
    for i, src in enumerate(["testsrc", "smptebars", "color=c=red", "rgbtestsrc", "testsrc2"]):
        make_clip(lib / f"{i}.mp4", seconds=2, source=src, audio_hz=None)
    settings = Settings(db=tmp_path / "db", model="tiny", pretrained="none", speech=False, ocr=False, batch_size=64)
    spy = _FailingBackbone(tiny_backbone)
    summary = IndexRun(open_store_for(settings, spy), spy, settings).run([lib])
    assert summary.indexed == 4 and summary.failed == 1
    assert "simulated encoder fault" in summary.failures[0]["error"] and summary.failures[0]["path"].endswith("2.mp4")

    # a commit that fails for one video: the batch is retried video by video
    from vidsearch.store import Store as StoreClass

    real_commit = StoreClass.commit

    def commit(self, batch):
        if any(v.video["path"].endswith("bad.mp4") for v in batch):
            raise OSError("simulated write fault")
        return real_commit(self, batch)

    monkeypatch.setattr(StoreClass, "commit", commit)
    make_clip(lib / "bad.mp4", seconds=2, source="color=c=green", audio_hz=None)
    make_clip(lib / "good.mp4", seconds=2, source="smptehdbars", audio_hz=None)
    summary, store, _ = index(tmp_path / "db", [lib], tiny_backbone)
    assert summary.indexed == 1 and summary.failed == 1
    assert "could not be written to the index: OSError: simulated write fault" in summary.failures[0]["error"]
    assert len(store.videos()["path"].to_pylist()) == 5 and all(rows_for(store, "segments", v) for v in store.indexed_ids())


def test_a_file_that_changes_while_it_is_indexed_is_picked_up_next_run(tmp_path, tiny_backbone, monkeypatch):
    from vidsearch.indexer import pipeline

    clip = make_clip(tmp_path / "lib" / "live.mp4", seconds=2, audio_hz=None)
    real_hash = pipeline.content_hash

    def hash_then_change(path):
        digest = real_hash(path)
        make_clip(clip, seconds=3, source="smptebars", audio_hz=None)  # rewritten while being indexed
        return digest

    monkeypatch.setattr(pipeline, "content_hash", hash_then_change)
    index(tmp_path / "db", [clip.parent], tiny_backbone)
    monkeypatch.undo()
    summary, store, spy = index(tmp_path / "db", [clip.parent], tiny_backbone)
    assert summary.indexed == 1 and spy.frames == 3
    assert store.videos().to_pylist()[0]["duration"] == pytest.approx(3.0, abs=0.1)


def test_manifest_titles_metadata_and_bad_lines(tmp_path, tiny_backbone):
    import json

    clip = make_clip(tmp_path / "media" / "talk.mp4", seconds=2, audio_hz=None)
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(
        json.dumps({"video": "media/talk.mp4", "title": "Quarterly talk", "metadata": {"year": 2024}})
        + "\n{not json\n"
        + json.dumps({"video": "media/missing.mp4"})
        + "\n"
        + json.dumps({"video": "ftp://host/x.mp4"})
        + "\n"
    )
    summary, store, _ = index(tmp_path / "db", [manifest], tiny_backbone)
    row = store.videos().to_pylist()[0]
    assert row["title"] == "Quarterly talk" and json.loads(row["metadata"]) == {"year": 2024}
    assert row["path"] == str(clip.resolve())
    problems = {f["path"]: f["error"] for f in store.stats()["failures"]}
    assert "not valid JSON" in problems[f"{manifest}:2"]
    assert "does not exist" in problems[f"{manifest}:3"]
    assert "unsupported URI scheme 'ftp://'" in problems[f"{manifest}:4"]


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
    """Decoders whose probe of any `slow*` file signals that it started, then blocks: a kill then lands
    mid-job (never before the worker is ready), and a hang is a real stuck step."""
    import contextlib

    from vidsearch.indexer import worker as W
    from vidsearch.indexer.prepare import DecodeJob, Failed, Prepared

    slow = make_clip(tmp_path / "slow.mp4", seconds=2, audio_hz=None)
    small = make_clip(tmp_path / "small.mp4", seconds=2, audio_hz=None)
    started = tmp_path / "started"
    blocking_probe = (
        "import time, pathlib, vidsearch.indexer.prepare as P; real = P.probe\n"
        "def probe(p):\n"
        "    if pathlib.Path(p).name.startswith('slow'):\n"
        f"        pathlib.Path({str(started)!r}).touch(); time.sleep(3600)\n"
        "    return real(p)\n"
        "P.probe = probe\n"
    )
    monkeypatch.setattr(W, "_BOOT", W._BOOT.replace("from vidsearch.indexer.worker", f"exec({blocking_probe!r}); from vidsearch.indexer.worker"))
    job = DecodeJob(str(slow), 1.0, 224)

    def wait_started():
        deadline = time.monotonic() + 120
        while not started.exists():
            assert time.monotonic() < deadline, "the decoder never started the job"
            time.sleep(0.02)
        started.unlink()

    def run(proc, job, stall):
        return list(proc.steps(job, contextlib.nullcontext, stall))[-1]

    proc = W.DecoderProcess()
    threading.Thread(target=lambda: (wait_started(), proc.proc.kill()), daemon=True).start()  # a segfault mid-file
    crashed = run(proc, job, 120)
    assert isinstance(crashed, Failed) and "decoder crashed" in crashed.error and "signal 9" in crashed.error
    proc.close()

    proc = W.DecoderProcess()  # stuck inside a step: killed once its progress stops, the stage named
    hung = run(proc, job, 3.0)
    assert isinstance(hung, Failed) and "no progress for 3 s while probing" in hung.error and not proc.alive
    proc.close()
    started.unlink()

    pool = W.DecoderPool(1)  # a crash inside the pool fails that file only; the next file decodes
    try:
        doomed = pool.submit(job)
        wait_started()
        for pid in _decoder_children():
            os.kill(pid, signal.SIGKILL)
        assert "decoder crashed" in doomed.result(timeout=60).error
        after = pool.submit(DecodeJob(str(small), 1.0, 224)).result(timeout=60)
        assert isinstance(after, Prepared) and len(after.frames.frames) == 2
    finally:
        pool.shutdown()


def test_a_decoder_that_cannot_start_stops_the_run_without_failing_files(tmp_path, tiny_backbone, monkeypatch):
    """Every file would fail for a reason that is not the file's: the run stops with that reason, and
    no file is recorded as failed (so the next run tries them all)."""
    from vidsearch.indexer import worker as W
    from vidsearch.indexer.pipeline import IndexRunError

    clip = make_clip(tmp_path / "lib" / "x.mp4", seconds=2, audio_hz=None)
    monkeypatch.setattr(W, "_BOOT", "import sys; sys.stderr.write('ImportError: no module named vidsearch'); sys.exit(3)")
    with pytest.raises(IndexRunError) as exc:
        index(tmp_path / "db", [clip], tiny_backbone)
    assert "could not start (exit code 3)" in str(exc.value) and "no module named vidsearch" in str(exc.value)
    assert Store.open(tmp_path / "db").files().num_rows == 0


def test_job_budget_follows_duration_and_channels():
    from vidsearch.indexer.prepare import DecodeJob
    from vidsearch.indexer.worker import job_budget

    plain, full = DecodeJob("x", 1.0, 112), DecodeJob("x", 1.0, 112, speech=True, ocr=True)
    assert job_budget(plain, 3600) > 1800 and job_budget(full, 3600) > 3 * job_budget(plain, 0) + 3600 * 3
    assert job_budget(plain, 7200) > job_budget(plain, 3600)


def _decoder_children() -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmd = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and b"vidsearch.indexer.worker" in cmd:  # the decoders' boot line
            pids.append(int(stat.parent.name))
    assert pids, "no decoder process found"
    return pids


def test_decoding_memory_stays_flat_while_its_consumer_works(tmp_path):
    """decord's reader went on decoding into memory while the frames it gave were read for text or
    encoded: a 30-minute recording with every channel on held 4.5 GB in its decoder process. The
    reader is closed between chunks now; measured here in a process of its own, with a consumer that
    takes 1.5 s per chunk."""
    import subprocess
    import sys

    clip = make_clip(tmp_path / "long.mp4", seconds=90, size="480x360", rate=25, source="testsrc2", audio_hz=None)
    script = f"""
import resource, time
from pathlib import Path
from vidsearch.indexer.decode import DecodeReport, iter_frames, plan_samples
from vidsearch.indexer.probe import probe
path = Path({str(clip)!r}); info = probe(path); report = DecodeReport()
rss = lambda: int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) // 1024
first = None
for chunk in iter_frames(path, plan_samples(info.duration, 6.0), info, 360, report, crop=False):
    first = first or rss()
    time.sleep(1.5)
print(report.decoder, first, rss())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    decoder, first, last = out.stdout.split()
    assert decoder == "decord", out.stderr[-1000:]
    assert int(last) - int(first) < 400, (first, last)  # MB: 50-130 here alone, up to 254 under the suite; 880 more with the reader left open


def test_short_videos_can_be_sampled_denser_than_long_ones(tmp_path):
    """`short_video_fps` (off by default) up to `short_video_seconds`, `sample_fps` past it; OCR keeps its own rate."""
    from vidsearch.indexer.prepare import decode_job, prepare

    clip = make_clip(tmp_path / "c.mp4", seconds=3, size="96x64", rate=10, audio_hz=None)
    default = decode_job(Settings(speech=False, ocr=False), str(clip), 112)
    assert default.frame_rate(3.0) == 1.0 and len(prepare(default).frames.frames) == 3
    dense = decode_job(Settings(speech=False, ocr=False, short_video_fps=2.0), str(clip), 112)
    assert (dense.frame_rate(3.0), dense.frame_rate(301.0), dense.text_rate) == (2.0, 1.0, 0.5)  # OCR's default: every 2 s
    assert decode_job(Settings(ocr_engine="tesseract"), str(clip), 112).text_rate == 1.0  # no glance: every sample
    assert decode_job(Settings(ocr_fps=2.0), str(clip), 112).text_rate == 2.0
    assert len(prepare(dense).frames.frames) == 6
    long = decode_job(Settings(speech=False, ocr=False, short_video_fps=2.0, short_video_seconds=2.0), str(clip), 112)
    assert len(prepare(long).frames.frames) == 3
