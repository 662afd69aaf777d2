"""The coarse index saved beside the store: a restart loads it instead of rebuilding, brings it up to
the store's version (deletes tombstoned), and falls back to a rebuild when it is unusable."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from vidsearch.search import SearchEngine
from vidsearch.search.coarse import CoarseIndex
from vidsearch.search.saved_coarse import ANN_DIR, saved_version
from vidsearch.store import Store


@pytest.fixture()
def library_copy(shared_library, tmp_path):
    settings, _ = shared_library
    db = tmp_path / "db"
    shutil.copytree(settings.db, db, ignore=shutil.ignore_patterns(ANN_DIR))
    return settings.model_copy(update={"db": db})


def _engine(settings, backbone) -> SearchEngine:
    engine = SearchEngine(Store.open(settings.db, backbone.fingerprint), backbone, settings)
    engine.wait_saved(60)
    return engine


def _count_builds(monkeypatch, allow: bool) -> list:
    calls: list = []
    build = CoarseIndex.build.__func__

    def counted(cls, *args, **kwargs):
        calls.append(1)
        assert allow, "the coarse index was rebuilt although a usable saved one exists"
        return build(cls, *args, **kwargs)

    monkeypatch.setattr(CoarseIndex, "build", classmethod(counted))
    return calls


def test_restart_loads_the_saved_index_and_finds_the_same(library_copy, tiny_backbone, monkeypatch):
    first = _engine(library_copy, tiny_backbone)
    assert saved_version(library_copy.db) == first.snapshot.version
    query = tiny_backbone.encode_text(["colour bars"])[0]
    want = first.snapshot.coarse.search(query[None], 10)

    _count_builds(monkeypatch, allow=False)
    second = _engine(library_copy, tiny_backbone)
    got = second.snapshot.coarse.search(query[None], 10)
    assert second.snapshot.coarse.ntotal == first.snapshot.coarse.ntotal
    assert list(got.ids[0]) == list(want.ids[0])
    np.testing.assert_allclose(got.scores[0], want.scores[0], rtol=1e-6)


def test_a_delete_after_the_save_is_applied_to_the_loaded_index(library_copy, tiny_backbone, monkeypatch):
    first = _engine(library_copy, tiny_backbone)
    gone = str(first.snapshot.ids[0])
    store = Store.open(library_copy.db, tiny_backbone.fingerprint)
    assert store.delete_videos([gone]) == 1

    _count_builds(monkeypatch, allow=False)
    second = _engine(library_copy, tiny_backbone)
    assert gone not in set(second.snapshot.coarse.video_ids)
    assert set(second.snapshot.coarse.video_ids) == set(second.snapshot.ids)
    assert saved_version(library_copy.db) == second.snapshot.version  # the tombstoned copy is saved in turn


@pytest.mark.parametrize("damage", ["corrupt", "other model"])
def test_an_unusable_saved_index_is_rebuilt_from_the_store(library_copy, tiny_backbone, monkeypatch, damage):
    first = _engine(library_copy, tiny_backbone)
    current = library_copy.db / ANN_DIR / (library_copy.db / ANN_DIR / "CURRENT").read_text().strip()
    if damage == "corrupt":
        (current / "index.faiss").write_bytes(b"not an index")
    else:
        manifest = json.loads((current / "manifest.json").read_text())
        manifest["fingerprint"] = "another-model"
        (current / "manifest.json").write_text(json.dumps(manifest))
    builds = _count_builds(monkeypatch, allow=True)
    second = _engine(library_copy, tiny_backbone)
    assert builds == [1]
    assert second.snapshot.coarse.ntotal == first.snapshot.coarse.ntotal
