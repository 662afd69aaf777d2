"""Videos on object storage as `Source`s: `s3://bucket/prefix/` listings, manifests stored in S3, and
manifest lines that name `s3://` objects; and the content key of an object.

A listing costs one LIST request per 1,000 objects and never reads a video: a key is taken by its
extension (objects without one are not sniffed, which would cost a GET each; name them in a manifest).

**Content keys stay cheap.** An object up to `FULL_HASH_MAX_BYTES` (64 MiB) is keyed exactly like a
local file, by blake2b-128 of its bytes, streamed without a copy on disk (so the same clip on a laptop
and in a bucket is one video). A larger object is keyed by what the store already knows about it, its
ETag and size (`etag:` + blake2b of both): no byte is read. (`VIDSEARCH_S3_FULL_HASH_MB` moves the threshold.) An ETag changes whenever the object's
content is replaced, and a server-side copy of a single-part object keeps it (so a copy still links to
the content already indexed); the cost is that a large object uploaded twice in different multipart
sizes is two videos.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import PurePosixPath

from vidsearch import objectstore as objs

from .discover import MANIFEST_SUFFIX, VIDEO_EXTENSIONS, DiscoveryError, Source
from .hashing import content_hash

# objects up to this size are keyed by their bytes; VIDSEARCH_S3_FULL_HASH_MB raises it for a one-off
# run (moving a laptop index to S3: every object read once and linked to the content already indexed)
FULL_HASH_MAX_BYTES = 64 << 20
CHUNK = 4 << 20


def object_source(info: objs.ObjectInfo, title: str | None = None, metadata: dict | None = None) -> Source:
    name = objs.S3Uri.parse(info.uri).name
    return Source(path=PurePosixPath(name), size=info.size, mtime=info.mtime, title=title,
                  metadata=metadata or {}, uri=info.uri, etag=info.etag)  # fmt: skip


def object_hash(src: Source) -> str:
    """The content key of an object (see the module's docstring for why two ways)."""
    limit = float(os.environ.get("VIDSEARCH_S3_FULL_HASH_MB", FULL_HASH_MAX_BYTES / (1 << 20))) * (1 << 20)
    if src.size > limit and src.etag:
        return hashlib.blake2b(f"etag:{src.etag}:{src.size}".encode(), digest_size=16).hexdigest()
    h = hashlib.blake2b(digest_size=16)
    for block in objs.iter_chunks(src.uri, CHUNK):
        h.update(block)
    return h.hexdigest()


def source_hash(src: Source) -> str:
    """The content key of any source: a local file's bytes, or an object's (`object_hash`)."""
    return object_hash(src) if src.uri else content_hash(src.path)


def discover_uri(uri: str) -> tuple[list[Source], list[tuple[str, str]]]:
    """Sources under an `s3://` prefix, from an `s3://.../manifest.jsonl`, or one named object."""
    uri = objs.normalize(uri)
    try:
        if uri.endswith(MANIFEST_SUFFIX):
            return read_remote_manifest(uri)
        if objs.is_prefix(uri):
            found = [object_source(o) for o in objs.list_objects(uri) if _is_video_key(o.uri)]
            return found, ([] if found else [(uri, "no video objects under this prefix")])
        return [object_source(objs.head(uri))], []
    except objs.ObjectStoreError as exc:
        return [], [(uri, str(exc))]


def _is_video_key(uri: str) -> bool:
    name = PurePosixPath(uri)
    return not name.name.startswith(".") and name.suffix.lower() in VIDEO_EXTENSIONS


def read_remote_manifest(uri: str) -> tuple[list[Source], list[tuple[str, str]]]:
    """A manifest stored in S3: lines name `s3://` objects or keys relative to the manifest."""
    base = objs.S3Uri.parse(uri)
    sources, problems = [], []
    for lineno, line in enumerate(objs.read_bytes(uri).decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{uri}:{lineno}"
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict) or not isinstance(entry.get("video"), str):
                raise DiscoveryError('each line must be an object with a "video" string')
            video = entry["video"]
            target = objs.normalize(video) if objs.is_uri(video) else str(base.join(video))
            sources.append(manifest_object(target, entry.get("title"), entry.get("metadata") or {}))
        except json.JSONDecodeError as exc:
            problems.append((where, f"not valid JSON: {exc.msg}"))
        except (DiscoveryError, objs.ObjectStoreError) as exc:
            problems.append((where, str(exc)))
    return sources, problems


def manifest_object(uri: str, title, metadata) -> Source:
    """The `Source` for an `s3://` object a manifest line names (a local manifest may name them too)."""
    if not isinstance(metadata, dict):
        raise DiscoveryError('"metadata" must be an object')
    try:
        info = objs.head(uri)
    except objs.ObjectStoreError as exc:
        raise DiscoveryError(f"video {uri} cannot be read: {exc}") from exc
    return object_source(info, str(title) if title is not None else None, metadata)


def media_location(src: Source) -> str:
    """What decoders and ffmpeg open: the file, or a presigned URL (range requests, no credentials) for an
    object in S3."""
    return objs.presign(src.uri) if src.uri else str(src.path)
