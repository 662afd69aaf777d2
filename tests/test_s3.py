"""Videos, manifests and the index on object storage, against a real S3 API on loopback (moto's server
mode, started here): index `s3://bucket/prefix/`, manifests stored in S3 and naming `s3://` objects,
the index itself at `s3://bucket/db`, search and media through the API (a range request answered by the
store), delete, a second run that does nothing, and reindex after an object changes."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install 'vidsearch[s3]' 'moto[server]')")
boto3 = pytest.importorskip("boto3", reason="boto3 is not installed (pip install 'vidsearch[s3]')")

from fastapi.testclient import TestClient  # noqa: E402
from media import make_clip, make_library  # noqa: E402

from vidsearch import objectstore  # noqa: E402
from vidsearch.config import load_settings  # noqa: E402
from vidsearch.indexer.hashing import content_hash  # noqa: E402
from vidsearch.indexer.pipeline import IndexRun, open_store_for  # noqa: E402
from vidsearch.store import Store  # noqa: E402

pytestmark = pytest.mark.slow
KEY = "test-key"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 and a bucket `vids` holding a library of generated clips."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto logs every request
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_REGION": "us-east-1"}  # fmt: skip
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
        mp.setenv(k, v)
    mp.delenv("AWS_PROFILE", raising=False)
    objectstore._client.cache_clear()
    client = objectstore.client()
    for bucket in ("vids", "index"):
        client.create_bucket(Bucket=bucket)
    root = tmp_path_factory.mktemp("s3lib")
    clips = make_library(root / "lib", 3, seconds=2.0)
    for clip in clips:
        client.upload_file(str(clip), "vids", f"lib/{clip.name}")
    client.put_object(Bucket="vids", Key="lib/notes.txt", Body=b"not a video")
    try:
        yield {"client": client, "clips": clips, "root": root}
    finally:
        objectstore._client.cache_clear()
        mp.undo()
        server.stop()


def _run(settings, backbone, paths, **kw):
    return IndexRun(open_store_for(settings, backbone), backbone, settings).run(paths, **kw)


def test_library_and_index_on_s3(s3, tiny_backbone, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # a thumbnail of an index in S3 must not land in a local `s3:` folder
    settings = load_settings(None, db="s3://index/db", model="tiny", pretrained="none", speech=False, ocr=False,
                             api_keys=[KEY], refresh_seconds=0.2)  # fmt: skip
    first = _run(settings, tiny_backbone, ["s3://vids/lib/"])
    assert (first.indexed, first.failed) == (3, 0), first.failures
    store = Store.open("s3://index/db")
    files = store.files().to_pylist()
    by_path = {r["path"]: r for r in files}
    # objects up to 64 MiB are keyed by their bytes: the same clip on disk and in S3 is one video
    for clip in s3["clips"]:
        assert by_path[f"s3://vids/lib/{clip.name}"]["video_id"] == content_hash(clip)
    assert "s3://vids/lib/notes.txt" not in by_path

    again = _run(settings, tiny_backbone, ["s3://vids/lib/"])
    assert (again.indexed, again.skipped, again.linked) == (0, 3, 0)  # a second run does no work

    headers = {"Authorization": f"Bearer {KEY}"}
    with TestClient(create_app(settings)) as api:
        body = api.post("/v1/search", json={"query": "a test pattern", "top_k": 3}, headers=headers).json()
        assert len(body["results"]) == 3
        video = body["results"][0]["video"]
        media = api.get(f"/v1/videos/{video['id']}/media", headers=headers, follow_redirects=False)
        assert media.status_code == 307
        # the presigned URL answers a range request itself: the bytes never pass through the API
        part = httpx.get(media.headers["location"], headers={"Range": "bytes=100-199"})  # not the app: the store
        clip = next(c for c in s3["clips"] if content_hash(c) == video["id"])
        assert part.status_code == 206 and part.content == clip.read_bytes()[100:200]
        thumb = api.get(f"/v1/videos/{video['id']}/thumbnail", params={"t": 0.5}, headers=headers)
        assert thumb.status_code == 200 and thumb.content[:2] == b"\xff\xd8"
        assert not (tmp_path / "s3:").exists() and list((tmp_path / "cache" / "vidsearch" / "thumbs").glob("*/*.jpg"))

    # an object replaced with other content: reindex drops the old video and indexes the new one
    changed = make_clip(tmp_path / "changed.mp4", seconds=2, source="smptebars", audio_hz=None)
    s3["client"].upload_file(str(changed), "vids", f"lib/{s3['clips'][0].name}")
    re = _run(settings, tiny_backbone, ["s3://vids/lib/"], prune=True)
    assert (re.indexed, re.skipped, re.removed) == (1, 2, 1), re.as_dict()
    store = Store.open("s3://index/db")
    assert content_hash(changed) in store.indexed_ids() and content_hash(s3["clips"][0]) not in store.indexed_ids()

    # delete by URI: gone from search, and kept out of the next run over its prefix
    gone = f"s3://vids/lib/{s3['clips'][1].name}"
    with store.write_lock():
        assert store.delete_paths([gone]) == 1
    after = _run(settings, tiny_backbone, ["s3://vids/lib/"])
    assert (after.indexed, after.excluded) == (0, 1)
    assert content_hash(s3["clips"][1]) not in Store.open("s3://index/db").indexed_ids()


def test_manifests_naming_objects(s3, tiny_backbone, tmp_path):
    """A manifest stored in S3 (keys relative to it, and s3:// URIs), and a local manifest naming objects."""
    clips = s3["clips"]
    lines = [
        {"video": f"../lib/{clips[0].name}", "title": "Relative key", "metadata": {"n": 1}},
        {"video": f"s3://vids/lib/{clips[1].name}", "title": "Absolute URI"},
        {"video": "../lib/missing.mp4"},
    ]
    s3["client"].put_object(Bucket="vids", Key="manifests/m.jsonl", Body="".join(json.dumps(x) + "\n" for x in lines).encode())
    local = tmp_path / "local.jsonl"
    local.write_text(json.dumps({"video": f"s3://vids/lib/{clips[2].name}", "title": "From a local manifest"}) + "\n")
    settings = load_settings(None, db=tmp_path / "db", model="tiny", pretrained="none", speech=False, ocr=False)
    summary = _run(settings, tiny_backbone, ["s3://vids/manifests/m.jsonl", local])
    assert (summary.indexed, summary.failed) == (3, 1), summary.failures
    assert "s3://vids/manifests/m.jsonl:3" in summary.failures[0]["path"] and "missing.mp4" in summary.failures[0]["error"]
    titles = {r["title"]: r["path"] for r in Store.open(settings.db).video_rows()}
    assert titles == {
        "Relative key": f"s3://vids/lib/{clips[0].name}",
        "Absolute URI": f"s3://vids/lib/{clips[1].name}",
        "From a local manifest": f"s3://vids/lib/{clips[2].name}",
    }


def create_app(settings):
    from vidsearch.server import create_app as make

    return make(settings)


def test_large_objects_are_keyed_without_reading_them(s3, monkeypatch):
    """Above the full-hash size an object's key is its ETag and size: a server-side copy keeps it (a copy
    links), replacing the content changes it, and no byte of the object is read."""
    from vidsearch.indexer.remote import discover_uri, object_hash

    client = s3["client"]
    name = s3["clips"][2].name
    client.copy_object(Bucket="vids", Key=f"copies/{name}", CopySource={"Bucket": "vids", "Key": f"lib/{name}"})
    monkeypatch.setenv("VIDSEARCH_S3_FULL_HASH_MB", "0.001")  # every test clip counts as large
    (orig,), _ = discover_uri(f"s3://vids/lib/{name}")
    (copy,), _ = discover_uri(f"s3://vids/copies/{name}")
    monkeypatch.setattr(objectstore, "iter_chunks", lambda *a, **k: pytest.fail("a large object was read"))
    assert object_hash(orig) == object_hash(copy) != content_hash(s3["clips"][2])
    client.put_object(Bucket="vids", Key=f"copies/{name}", Body=s3["clips"][0].read_bytes())
    (changed,), _ = discover_uri(f"s3://vids/copies/{name}")
    assert object_hash(changed) != object_hash(orig)
