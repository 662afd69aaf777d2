"""A file's own tags and named chapters are searchable text (the p22 media probe found a chaptered MKV's
"Kilimanjaro summit" and its title tag "Grandma birthday party" unread): the tags as `metadata` spans
over the whole video, each chapter over its own stretch; tool-written tags are left out."""

from __future__ import annotations

import subprocess
from pathlib import Path

from vidsearch.config import Settings
from vidsearch.indexer.container_text import container_spans
from vidsearch.indexer.pipeline import IndexRun, open_store_for
from vidsearch.indexer.probe import probe

FFMETADATA = """;FFMETADATA1
title=Grandma birthday party
comment=cake and candles in the garden
artist=Uncle Bob
genre=vid:v0200fg10000c3b1d2e3f4g5h6i7j8k9

[CHAPTER]
TIMEBASE=1/1000
START=0
END=2000
title=Zanzibar arrival

[CHAPTER]
TIMEBASE=1/1000
START=2000
END=4000
title=Kilimanjaro summit
"""


def _chaptered(path: Path, tmp: Path) -> Path:
    meta = tmp / "meta.txt"
    meta.write_text(FFMETADATA)
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=s=96x64:r=5:d=4", "-i", str(meta),
                    "-map", "0:v", "-map_metadata", "1", "-map_chapters", "1", "-c:v", "libx264", "-preset", "ultrafast", str(path)],
                   check=True)  # fmt: skip
    return path


def test_tags_and_chapters_become_metadata_spans(tmp_path):
    for suffix in (".mkv", ".mp4"):
        video = _chaptered(tmp_path / f"trip{suffix}", tmp_path)
        info = probe(video)
        assert info.chapters == ((0.0, 2.0, "Zanzibar arrival"), (2.0, 4.0, "Kilimanjaro summit")), suffix
        spans = {(sp.text, sp.start, sp.end) for sp in container_spans(info, "trip", info.duration)}
        assert {("Grandma birthday party", 0.0, 4.0), ("cake and candles in the garden", 0.0, 4.0), ("Uncle Bob", 0.0, 4.0),
                ("Zanzibar arrival", 0.0, 2.0), ("Kilimanjaro summit", 2.0, 4.0)} == spans, (suffix, spans)  # fmt: skip
    # the file's own name as its title tag is not said twice
    assert not [sp for sp in container_spans(info, "grandma  birthday party", 4.0) if sp.text == "Grandma birthday party"]


def test_an_indexed_file_carries_its_tags_and_chapters(tmp_path, tiny_backbone):
    lib = tmp_path / "lib"
    lib.mkdir()
    _chaptered(lib / "VID_0042.mkv", tmp_path)
    settings = Settings(db=tmp_path / "db", model="tiny", pretrained="none", speech=False, ocr=False)
    store = open_store_for(settings, tiny_backbone)
    summary = IndexRun(store, tiny_backbone, settings).run([lib])
    assert summary.indexed == 1
    (video_id,) = store.indexed_ids()
    rows = {r["text"]: (r["start"], r["end"]) for r in store.span_rows(video_id, "metadata")}
    assert rows["VID_0042"][0] == 0.0 and rows["Grandma birthday party"] == (0.0, 4.0)
    assert rows["Kilimanjaro summit"] == (2.0, 4.0)
    hits = store.table("spans").search("Kilimanjaro", query_type="fts").limit(5).to_list()
    assert [(h["video_id"], h["start"]) for h in hits] == [(video_id, 2.0)]
