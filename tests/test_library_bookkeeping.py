"""Bookkeeping of awkward real-world libraries: names that are not UTF-8, bad manifest lines, symbolic
link loops, files that move or go away, manifest text for copies, and failures that do not change.
Each bad file or line costs only itself, with a message that names it."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from media import make_clip
from vidsearch.config import Settings
from vidsearch.indexer.discover import discover, read_manifest
from vidsearch.indexer.pipeline import IndexRun, open_store_for
from vidsearch.indexer.sidecar import subtitle_spans
from vidsearch.store import local_path, path_key, readable_name


def index(db, paths, backbone, prune=False):
    settings = Settings(db=db, model="tiny", pretrained="none", speech=False, ocr=False)
    store = open_store_for(settings, backbone)
    return IndexRun(store, backbone, settings).run([Path(p) for p in paths], prune=prune), store


def clip(path: Path, colour: str) -> Path:
    return make_clip(path, seconds=1, size="96x64", rate=5, source=f"color=c={colour}", audio_hz=None)


def metadata_texts(store, video_id: str) -> set[str]:
    return {r["text"] for r in store.span_rows(video_id, "metadata")}


# -- D1: a file name that is not valid UTF-8 ----------------------------------------------------------


def test_path_keys_round_trip_bytes():
    name = os.fsdecode(b"/lib/latin1 caf\xe9 100%.mp4")
    key = path_key(name)
    assert key.startswith("file:///lib/") and key.encode("utf-8")  # storable
    assert local_path(key) == name and os.fsencode(local_path(key)) == b"/lib/latin1 caf\xe9 100%.mp4"
    assert path_key("/lib/plain é 100%.mp4") == "/lib/plain é 100%.mp4"  # valid names are stored as they are
    assert readable_name(os.fsdecode(b"caf\xe9 \xc3\xa9t\xc3\xa9")) == "café été"


def test_a_manifest_may_name_a_file_by_the_uri_the_index_stores(tmp_path):
    """`%E9` in a file:// URI is the byte 0xe9 (it read as U+FFFD, a file that does not exist)."""
    target = Path(os.fsdecode(os.fsencode(str(tmp_path)) + b"/caf\xe9.mp4"))
    target.write_bytes(b"\x00\x00\x00\x18ftypisom")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"video": path_key(target)}) + "\n")
    sources, problems = read_manifest(manifest)
    assert problems == [] and [os.fsencode(s.path) for s in sources] == [os.fsencode(str(target))]


def test_a_name_that_is_not_utf8_is_indexed(tmp_path, tiny_backbone):
    lib = tmp_path / "lib"
    clip(lib / "plain.mp4", "red")
    latin1 = Path(os.fsdecode(os.fsencode(str(lib)) + b"/latin1 caf\xe9.mp4"))
    clip(latin1, "blue")
    os.symlink("nowhere.mp4", os.fsdecode(os.fsencode(str(lib)) + b"/gone \xff.mp4"))  # a problem named in bytes
    summary, store = index(tmp_path / "db", [lib], tiny_backbone)
    assert summary.indexed == 2 and summary.failed == 1, summary.failures
    videos = {v["title"]: v for v in store.videos(["path", "title"]).to_pylist()}
    assert set(videos) == {"plain", "latin1 café"}
    assert os.path.samefile(local_path(videos["latin1 café"]["path"]), latin1)  # the stored key opens the file
    failures = store.stats()["failures"]
    assert [os.fsencode(local_path(f["path"])) for f in failures] == [os.fsencode(str(lib)) + b"/gone \xff.mp4"]
    assert "broken symbolic link" in failures[0]["error"]
    again, _ = index(tmp_path / "db", [lib], tiny_backbone)  # and every later run goes through too
    assert again.indexed == 0 and again.failed == 0 and again.skipped == 3
    # the server serves it and shows it readable; `vidsearch delete PATH` finds it
    from fastapi.testclient import TestClient

    from vidsearch.server import create_app

    settings = Settings(db=tmp_path / "db", model="tiny", pretrained="none", speech=False, ocr=False, library_roots=[lib])
    with TestClient(create_app(settings)) as client:
        listed = {v["title"]: v for v in client.get("/v1/videos").json()["videos"]}
        assert listed["latin1 café"]["uri"] == "latin1 café.mp4"  # relative to its root, for an anonymous reader
        media = client.get(f"/v1/videos/{listed['latin1 café']['id']}/media")
        assert media.status_code == 200 and media.content == latin1.read_bytes()
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "vidsearch.cli", "delete", os.fsencode(str(latin1)), "--db", str(tmp_path / "db"), "--json"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0 and json.loads(proc.stdout)["files"] == 1, proc.stdout + proc.stderr[-1000:]


# -- D2: one bad manifest line ------------------------------------------------------------------------


def test_bad_manifest_lines_cost_only_themselves(tmp_path, monkeypatch):
    (tmp_path / "a.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom")
    (tmp_path / "b.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom")
    (tmp_path / "sub").mkdir()
    manifest = tmp_path / "m.jsonl"
    manifest.write_bytes(
        b"\xef\xbb\xbf" + json.dumps({"video": "a.mp4", "title": "first"}).encode() + b"\n"  # saved with a BOM
        + b'{"video": "a.mp4", "title": "caf\xe9"}\n'  # a Latin-1 byte
        + b"[" * 100_000 + b"]" * 100_000 + b"\n"  # nested past the parser's depth
        + b'{"video": "sub"}\n'  # a folder
        + b'{"video": "b.mp4", "title": "last"}\n'
    )  # fmt: skip
    monkeypatch.chdir(tmp_path / "sub")
    sources, problems = read_manifest(Path("../m.jsonl"))  # keyed by the absolute path, whatever the cwd
    assert [s.title for s in sources] == ["first", "last"]
    got = dict(problems)
    key = str(manifest)
    assert set(got) == {f"{key}:2", f"{key}:3", f"{key}:4"}
    assert "not valid UTF-8" in got[f"{key}:2"]
    assert "nested too deeply" in got[f"{key}:3"]
    assert "is a folder" in got[f"{key}:4"]


# -- D5: a symbolic link loop next to subtitles -------------------------------------------------------


def test_a_link_loop_costs_only_itself(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom")
    (folder / "clip.srt").write_text("1\n00:00:01,000 --> 00:00:03,000\ncontrol giraffe\n\n")
    os.symlink("self.mp4", folder / "self.mp4")
    os.symlink("loopB.mp4", folder / "loopA.mp4")
    os.symlink("loopA.mp4", folder / "loopB.mp4")
    assert [s.text for s in subtitle_spans(folder / "clip.mp4")] == ["control giraffe"]
    _, problems = discover([folder])
    got = dict(problems)
    for name in ("self.mp4", "loopA.mp4", "loopB.mp4"):
        assert got[str(folder / name)].startswith("symbolic link loop"), got


# -- D6: a video's path and title follow a live file --------------------------------------------------


def test_video_path_follows_files_that_go_or_move(tmp_path, tiny_backbone):
    lib = tmp_path / "lib"
    clip(lib / "original.mp4", "red")
    shutil.copy(lib / "original.mp4", lib / "dup copy.mp4")  # indexed first: the video names it
    clip(lib / "move_me.mp4", "green")
    db = tmp_path / "db"
    _, store = index(db, [lib], tiny_backbone)
    by_title = {v["title"]: v["video_id"] for v in store.videos(["video_id", "title"]).to_pylist()}
    assert set(by_title) == {"dup copy", "move_me"}
    dup, moved = by_title["dup copy"], by_title["move_me"]

    (lib / "dup copy.mp4").unlink()
    (lib / "moved").mkdir()
    (lib / "move_me.mp4").rename(lib / "moved" / "moved_now.mp4")
    summary, store = index(db, [lib], tiny_backbone)  # `index`: the moved file is linked
    assert summary.linked == 1 and summary.indexed == 0
    row = store.video_rows(moved)[0]
    assert row["path"] == str(lib / "moved" / "moved_now.mp4") and row["title"] == "moved_now"
    assert "moved_now" in metadata_texts(store, moved) and "move_me" not in metadata_texts(store, moved)

    summary, store = index(db, [lib], tiny_backbone, prune=True)  # `reindex`: the deleted copy is forgotten
    row = store.video_rows(dup)[0]
    assert row["path"] == str(lib / "original.mp4") and row["title"] == "original"
    assert metadata_texts(store, dup) == {"original"}
    for v in store.videos(["path"]).to_pylist():
        assert os.path.exists(local_path(v["path"]))


def test_reindex_links_files_that_moved_instead_of_encoding_them_again(tmp_path, tiny_backbone):
    """`reindex` forgot the old path and dropped its video before planning the walk's files, so a file
    moved or renamed (a folder renamed: every file in it) was decoded and encoded again (p22 M1)."""
    lib = tmp_path / "lib"
    clip(lib / "sub" / "d.mp4", "red")
    db = tmp_path / "db"
    _, store = index(db, [lib], tiny_backbone)
    (video_id,) = store.indexed_ids()
    (lib / "sub").rename(lib / "sub2")
    (lib / "sub2" / "d.mp4").rename(lib / "sub2" / "d renamed.mp4")
    summary, store = index(db, [lib], tiny_backbone, prune=True)
    assert (summary.linked, summary.indexed, summary.removed) == (1, 0, 0)
    row = store.video_rows(video_id)[0]
    assert row["path"] == str(lib / "sub2" / "d renamed.mp4") and row["title"] == "d renamed"
    assert set(store.files()["path"].to_pylist()) == {str(lib / "sub2" / "d renamed.mp4")}
    (lib / "sub2" / "d renamed.mp4").unlink()  # and a file that is gone still takes its video with it
    summary, store = index(db, [lib], tiny_backbone, prune=True)
    assert summary.removed == 1 and store.indexed_ids() == set()


def test_files_that_swap_or_shift_names_leave_each_video_at_its_own_path(tmp_path, tiny_backbone):
    """Episodes renumbered (ep2 -> ep3, ep1 -> ep2, a new ep1) and two files swapped: the files rows
    followed, the videos kept their old paths and titles, so search opened the wrong file under the
    wrong name, and no later run repaired it (p22 M2)."""
    lib = tmp_path / "lib"
    clip(lib / "ep1.mp4", "red")
    clip(lib / "ep2.mp4", "green")
    db = tmp_path / "db"
    _, store = index(db, [lib], tiny_backbone)
    ids = {v["title"]: v["video_id"] for v in store.videos(["video_id", "title"]).to_pylist()}
    red, green = ids["ep1"], ids["ep2"]
    (lib / "ep2.mp4").rename(lib / "ep3.mp4")
    (lib / "ep1.mp4").rename(lib / "ep2.mp4")
    clip(lib / "ep1.mp4", "blue")
    summary, store = index(db, [lib], tiny_backbone)
    assert summary.indexed == 1 and summary.linked == 2

    def where(store):
        return {v["video_id"]: (Path(v["path"]).name, v["title"]) for v in store.videos(["video_id", "path", "title"]).to_pylist()}

    got = where(store)
    assert got[red] == ("ep2.mp4", "ep2") and got[green] == ("ep3.mp4", "ep3"), got
    assert sorted(t for _, t in got.values()) == ["ep1", "ep2", "ep3"]
    assert metadata_texts(store, red) == {"ep2"}
    # a swap: both paths still exist, so "the stored path is gone" never fired
    tmp = lib / "swap.tmp"
    (lib / "ep2.mp4").rename(tmp)
    (lib / "ep3.mp4").rename(lib / "ep2.mp4")
    tmp.rename(lib / "ep3.mp4")
    index(db, [lib], tiny_backbone)
    got = where(store)
    assert got[red] == ("ep3.mp4", "ep3") and got[green] == ("ep2.mp4", "ep2"), got


# -- D7: manifest text for content indexed under another path -----------------------------------------


def test_manifest_text_reaches_a_linked_copy(tmp_path, tiny_backbone):
    lib = tmp_path / "lib"
    clip(lib / "a.mp4", "yellow")
    db = tmp_path / "db"
    _, store = index(db, [lib], tiny_backbone)
    (video_id,) = store.indexed_ids()
    shutil.copy(lib / "a.mp4", tmp_path / "copy.mp4")
    manifest = tmp_path / "m.jsonl"
    entry = {"video": "copy.mp4", "title": "outside the manifest folder", "metadata": {"tags": ["zebra", "lantern"]}}
    manifest.write_text(json.dumps(entry) + "\n")
    summary, store = index(db, [manifest], tiny_backbone)
    assert summary.linked == 1 and summary.failed == 0
    row = store.video_rows(video_id)[0]
    assert row["title"] == "outside the manifest folder"  # a manifest title wins over a file name
    assert row["metadata"]["tags"] == ["zebra", "lantern"]
    assert {"outside the manifest folder", "zebra, lantern"} <= metadata_texts(store, video_id)
    hits = store.table("spans").search("manifest folder", query_type="fts").limit(5).to_list()
    assert video_id in {h["video_id"] for h in hits}


# -- D10: a failure that did not change is not a new failure ------------------------------------------


def test_unchanged_problems_are_not_new_failures(tmp_path, tiny_backbone):
    lib = tmp_path / "lib"
    clip(lib / "a.mp4", "white")
    os.symlink("nowhere.mp4", lib / "broken.mp4")
    db = tmp_path / "db"
    first, _ = index(db, [lib], tiny_backbone)
    assert first.failed == 1
    again, store = index(db, [lib], tiny_backbone)
    assert again.failed == 0 and again.skipped == 2 and again.failures == []
    assert [f["path"] for f in store.stats()["failures"]] == [str(lib / "broken.mp4")]  # still listed


def test_a_library_of_silent_videos_is_searched(tmp_path):
    """Every video silent: their audio vectors are (0, 0) and the shipped model's TEFAL head padded
    them into a (0, 256) batch, a 500 for every search (the probe's first finding this round)."""
    import subprocess
    import sys

    from vidsearch.search.features import pad_vectors

    x, m = pad_vectors([np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)], 256)
    assert x.shape == (2, 0, 256) and not m.any()
    lib = tmp_path / "silent"
    clip(lib / "a.mp4", "red")
    clip(lib / "b.mp4", "blue")
    db = str(tmp_path / "db")
    run = lambda *args: subprocess.run([sys.executable, "-m", "vidsearch.cli", *args], capture_output=True, text=True, timeout=300)  # noqa: E731
    assert run("index", str(lib), "--db", db, "--model", "tiny").returncode == 0
    proc = run("search", "a red screen", "--db", db, "--json", "--min-relevance", "0")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-1500:]
    assert {r["video"]["title"] for r in json.loads(proc.stdout)["results"]} == {"a", "b"}


def test_subtitles_added_later_or_beside_a_copy_are_read(tmp_path, tiny_backbone):
    """A subtitle file is read with its video: one added or edited beside an unchanged video, or one
    beside a byte copy that is linked to indexed content, was never read."""
    lib = tmp_path / "lib"
    talk = clip(lib / "talk.mp4", "red")
    summary, store = index(tmp_path / "db", [lib], tiny_backbone)
    video_id = store.videos(["video_id"])["video_id"][0].as_py()
    assert store.span_rows(video_id, "subtitle") == []
    (lib / "talk.srt").write_text("1\n00:00:00,000 --> 00:00:00,900\nthe quarterly numbers\n")
    again, store = index(tmp_path / "db", [lib], tiny_backbone)
    assert again.skipped == 1 and again.indexed == 0  # the video itself is not encoded again
    assert [r["text"] for r in store.span_rows(video_id, "subtitle")] == ["the quarterly numbers"]
    (lib / "talk.srt").write_text("1\n00:00:00,000 --> 00:00:00,900\nthe yearly numbers\n")  # edited
    index(tmp_path / "db", [lib], tiny_backbone)
    assert [r["text"] for r in store.span_rows(video_id, "subtitle")] == ["the yearly numbers"]
    third, _ = index(tmp_path / "db", [lib], tiny_backbone)
    assert third.spans == 0  # read once, not every run
    shutil.copy(talk, lib / "copy.mp4")  # a copy with its own subtitles, linked to the same content
    (lib / "copy.srt").write_text("1\n00:00:00,000 --> 00:00:00,500\nla cifra trimestrale\n")
    linked, _ = index(tmp_path / "db", [lib], tiny_backbone)
    assert linked.linked == 1
    assert sorted(r["text"] for r in store.span_rows(video_id, "subtitle")) == ["la cifra trimestrale", "the yearly numbers"]


def test_a_manifest_naming_one_file_twice_says_which_row_is_used(tmp_path):
    (tmp_path / "b c.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"video": "b c.mp4", "title": "Launch talk", "metadata": {"year": 2024}}) + "\n"
                        + json.dumps({"video": (tmp_path / "b c.mp4").as_uri(), "title": "uri dup"}) + "\n")  # fmt: skip
    sources, problems = read_manifest(manifest)
    assert [(s.title, s.metadata) for s in sources] == [("Launch talk", {"year": 2024})]
    assert problems == [(f"{manifest}:2", f"names the same video as line 1 ({tmp_path / 'b c.mp4'}), whose title and metadata are used")]


def test_a_manifest_edited_for_unchanged_files_retitles_their_videos(tmp_path, tiny_backbone):
    """Fixing titles or descriptions in a manifest and running again changed nothing (the files were
    skipped as unchanged): the video's title, metadata and `metadata` spans follow the manifest."""
    lib = tmp_path / "lib"
    clip(lib / "a.mp4", "red")
    manifest = lib / "m.jsonl"
    manifest.write_text(json.dumps({"video": "a.mp4", "title": "Launch tlak", "metadata": {"tags": ["rocket"]}}) + "\n")
    _, store = index(tmp_path / "db", [manifest], tiny_backbone)
    video_id = store.videos(["video_id"])["video_id"][0].as_py()
    assert metadata_texts(store, video_id) >= {"Launch tlak"}
    manifest.write_text(json.dumps({"video": "a.mp4", "title": "Launch talk", "metadata": {"description": "The countdown from ten", "tags": ["rocket"]}}) + "\n")
    again, store = index(tmp_path / "db", [manifest], tiny_backbone)
    assert again.skipped == 1 and again.indexed == 0  # not encoded again
    row = store.video_rows(video_id)[0]
    assert row["title"] == "Launch talk" and row["metadata"]["description"] == "The countdown from ten"
    texts = metadata_texts(store, video_id)
    assert "Launch talk" in texts and "Launch tlak" not in texts and any("countdown" in t for t in texts), texts
    third, _ = index(tmp_path / "db", [manifest], tiny_backbone)
    assert third.spans == 0  # once, not every run


# -- the second media zoo probe: failures that go away, files that went, text read in part -------------


def test_a_file_that_could_not_be_read_is_tried_again_when_it_can(tmp_path, tiny_backbone, monkeypatch):
    """A file that failed because the file system refused it ("Permission denied") is tried again by
    the next run although its size and mtime did not change (chmod changes neither); a file whose
    content failed is not, and the summary says how many of the skipped failed before."""
    import vidsearch.indexer.pipeline as pipeline

    lib = tmp_path / "lib"
    locked = clip(lib / "locked.mp4", "white")
    (lib / "junk.mp4").write_bytes(b"\x00" * 512)  # fails for its content
    real_hash = pipeline.content_hash

    def refused(path, *a, **kw):
        if Path(path).name == "locked.mp4":
            raise PermissionError(13, "Permission denied")
        return real_hash(path, *a, **kw)

    monkeypatch.setattr(pipeline, "content_hash", refused)  # root reads any file: refuse as a user's run would be
    first, _ = index(tmp_path / "db", [lib], tiny_backbone)
    assert sorted((Path(f["path"]).name, f["error"]) for f in first.failures)[1] == ("locked.mp4", "cannot read file: Permission denied")
    monkeypatch.setattr(pipeline, "content_hash", real_hash)  # permissions fixed
    assert os.stat(locked).st_size and first.failed == 2
    again, store = index(tmp_path / "db", [lib], tiny_backbone)
    assert again.indexed == 1 and again.skipped == 1 and again.skipped_failed == 1, again
    assert [Path(f["path"]).name for f in store.stats()["failures"]] == ["junk.mp4"]


def test_a_folder_that_could_not_be_listed_leaves_status_once_it_is(tmp_path, tiny_backbone, monkeypatch):
    import vidsearch.indexer.discover as discover_mod

    lib = tmp_path / "lib"
    clip(lib / "a.mp4", "white")
    clip(lib / "inner" / "b.mp4", "red")
    real_scandir = os.scandir

    def refused(path="."):
        if Path(path).name == "inner":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(discover_mod.os, "scandir", refused)
    first, store = index(tmp_path / "db", [lib], tiny_backbone)
    assert [(Path(f["path"]).name, f["error"]) for f in store.stats()["failures"]] == [("inner", "cannot list folder: Permission denied")]
    monkeypatch.setattr(discover_mod.os, "scandir", real_scandir)
    again, store = index(tmp_path / "db", [lib], tiny_backbone)
    assert again.indexed == 1 and store.stats()["failures"] == []


def test_index_says_how_many_indexed_files_are_gone_and_reindex_drops_them(tmp_path, tiny_backbone):
    lib = tmp_path / "lib"
    clip(lib / "a.mp4", "white")
    gone = clip(lib / "b.mp4", "red")
    index(tmp_path / "db", [lib], tiny_backbone)
    gone.unlink()
    again, store = index(tmp_path / "db", [lib], tiny_backbone)
    assert again.gone == 1 and again.removed == 0 and len(store.indexed_ids()) == 2  # `index` only adds
    pruned, store = index(tmp_path / "db", [lib], tiny_backbone, prune=True)
    assert pruned.removed == 1 and pruned.gone == 0 and len(store.indexed_ids()) == 1


def test_subtitle_warnings_stay_with_the_video_and_microdvd_is_read(tmp_path, tiny_backbone):
    """A subtitle file read in part (Windows-1252) or not at all (no cue, a VobSub pair) is a warning
    kept with the video (its files row: `status`, the summary, --json), not only a log line; a MicroDVD
    `.sub` is read, timed by the frame rate it names, else the video's."""
    lib = tmp_path / "lib"
    clip(lib / "latin.mp4", "white")
    (lib / "latin.srt").write_bytes("1\n00:00:00,000 --> 00:00:00,900\nle caf\u00e9 cr\u00e8me\n".encode("cp1252"))
    clip(lib / "dvd.mp4", "red")
    (lib / "dvd.sub").write_text("{1}{1}10\n{2}{8}The penguin|drives a {y:i}tractor\n")
    clip(lib / "vob.mp4", "blue")
    (lib / "vob.sub").write_bytes(b"\x00\x00\x01\xba" + b"\x00" * 60)
    (lib / "vob.idx").write_text("# VobSub index file, v7\n")
    summary, store = index(tmp_path / "db", [lib], tiny_backbone)
    assert summary.indexed == 3 and summary.failed == 0
    warned = {Path(w["path"]).name: w["warning"] for w in summary.warnings}
    assert "latin.srt is not UTF-8" in warned["latin.mp4"] and "VobSub" in warned["vob.mp4"] and "dvd.mp4" not in warned
    assert {Path(w["path"]).name for w in store.stats()["warnings"]} >= {"latin.mp4", "vob.mp4"}
    ids = {Path(r["path"]).name: r["video_id"] for r in store.video_rows()}
    [cue] = store.span_rows(ids["dvd.mp4"], "subtitle")
    assert cue["text"] == "The penguin drives a tractor" and (cue["start"], cue["end"]) == pytest.approx((0.2, 0.8))
    assert [r["text"] for r in store.span_rows(ids["latin.mp4"], "subtitle")] == ["le caf\u00e9 cr\u00e8me"]


def test_a_manifest_row_written_flat_keeps_its_description_and_tags(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"video": "a.mp4", "title": "Plain", "description": "a zebra crossing", "tags": ["flamingo"],
                                    "source_path": "/srv/private/a.mp4", "metadata": {"year": 2024, "tags": ["kept"]}}) + "\n")  # fmt: skip
    [src], problems = read_manifest(manifest)
    assert problems == [] and src.metadata == {"description": "a zebra crossing", "tags": ["kept"], "year": 2024}
