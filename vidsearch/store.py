"""Access to the index directory (LanceDB, embedded): open, bind to a fingerprint, commit, delete.

Writes follow the visibility contract: a video's segment and feature rows are written first, then its
`videos` row, then its `files` row. Search only sees videos that have a `videos` row, and every
indexing run starts by deleting rows whose video has none (what a killed run left behind), so a video
is indexed exactly once however often a run dies and restarts.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

os.environ.setdefault("LANCE_LOG", "error")  # lance warns on every table it creates

from .lance_import import defer_namespace_client  # noqa: E402

defer_namespace_client()  # ~2.6 s of CPU less per command that opens an index (lance_import.py)

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402

from . import objectstore  # noqa: E402
from . import schema as S  # noqa: E402
from .fingerprint import Fingerprint, FingerprintMismatch  # noqa: E402
from .index_lock import LOCK_FILE  # noqa: E402

if TYPE_CHECKING:
    import lancedb

META, FILES, VIDEOS, SEGMENTS, FEATURES, SPANS = (
    "meta",
    "files",
    "videos",
    "segments",
    "video_features",
    "spans",
)


class StoreError(RuntimeError):
    """The index directory cannot be used as asked; the message says why and what to do."""


class WriterBusy(StoreError):
    """Another process holds the index's write lock (a job waits for it; a CLI run says so and stops)."""


LOCK_PATIENCE = 1.0  # seconds a writer tries for the lock before WriterBusy (a waiting job looks at it now and then)


@contextlib.contextmanager
def index_write_lock(path: Path, patience: float = LOCK_PATIENCE) -> Iterator[None]:
    """The write lock of the index directory `path` (which must exist), held for the block: an exclusive
    `flock` on `<path>/.write.lock`, tried for `patience` seconds before WriterBusy (`index_lock.writer_busy`
    looks without taking it)."""
    fh = open(Path(path) / LOCK_FILE, "a")
    try:
        deadline = time.monotonic() + patience
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise WriterBusy(f"another vidsearch process is writing to {path}; wait for it to finish") from None
                time.sleep(0.05)
        yield
    finally:
        fh.close()


@dataclass
class EncodedVideo:
    """Everything one video contributes to the index, as columns."""

    video: dict  # a `videos` row (without fingerprint / indexed_at, which the store fills)
    unit_start: np.ndarray  # (T,) seconds
    unit_end: np.ndarray  # (T,)
    unit_vectors: np.ndarray  # (T, D) float32, unit length
    seg_kind: np.ndarray  # (S,) str
    seg_start: np.ndarray  # (S,)
    seg_end: np.ndarray  # (S,)
    seg_vectors: np.ndarray  # (S, D)
    audio_start: np.ndarray | None = None
    audio_end: np.ndarray | None = None
    audio_vectors: np.ndarray | None = None
    unit_cues: np.ndarray | None = None  # (T, 2) where-cues per unit (None: not read; stored empty)
    unit_shapes: np.ndarray | None = None  # (T, 6) silhouette readings per unit (None: not read; stored empty)
    sound_cues: np.ndarray | None = None  # (R, 5) the soundtrack every quarter second (None: no soundtrack read; stored empty)
    files: list[dict] = field(default_factory=list)  # `files` rows that point at this video
    spans: list = field(default_factory=list)  # timed text (TextSpan) to embed
    span_rows: pa.Table | None = None  # `spans` rows, embedded


FILE_URI = "file://"


def path_key(path: str | os.PathLike) -> str:
    """The string the index stores for a local path (`files.path`, `videos.path`): the path itself, or,
    for a name that is not valid UTF-8 (its bytes come back from the OS as surrogate escapes, which Arrow
    cannot store), a `file://` URI with every byte outside unreserved ASCII percent-encoded. Lossless
    (`local_path` gives back the very bytes to open) and unambiguous: a local key is otherwise an
    absolute path, and an object's an `s3://` URI."""
    text = os.fspath(path)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return FILE_URI + urllib.parse.quote(os.fsencode(text), safe="/")


def local_path(key: str) -> str:
    """The path to open for a stored key (the inverse of `path_key`; other keys are returned as they are)."""
    if key.startswith(FILE_URI):
        return os.fsdecode(urllib.parse.unquote_to_bytes(key[len(FILE_URI) :]))
    return key


def readable_name(text: str) -> str:
    """A name fit to show and search (a title): the bytes of a name that is not valid UTF-8 (surrogate
    escapes) read as Windows-1252, the usual legacy encoding of such names; valid parts are kept."""
    if not any("\udc80" <= c <= "\udcff" for c in text):
        return text
    return "".join(bytes([ord(c) - 0xDC00]).decode("cp1252", "replace") if "\udc80" <= c <= "\udcff" else c for c in text)


def _fixed_list(vectors: np.ndarray) -> pa.FixedSizeListArray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])


def _nested(vectors: list[np.ndarray], dim: int | None) -> pa.Array:
    """A list per video of (T_i, D) matrices, built columnar: one flat buffer plus offsets.

    With `dim` None the inner lists may differ in width (audio tokens: a video without a soundtrack has
    none, and towers differ), so any mix of videos with and without them commits in one batch."""
    counts = np.array([len(v) for v in vectors], dtype=np.int32)
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    if dim is None:
        rows = [np.asarray(v, np.float32) for v in vectors]
        rows = [r if r.ndim == 2 else r.reshape(len(r), -1 if r.size else 0) for r in rows]
        widths = np.concatenate([np.full(len(r), r.shape[1], np.int32) for r in rows]) if rows else np.zeros(0, np.int32)
        flat = np.concatenate([r.reshape(-1) for r in rows]) if rows else np.zeros(0, np.float32)
        inner_off = pa.array(np.concatenate([[0], np.cumsum(widths)]).astype(np.int32))
        inner = pa.ListArray.from_arrays(inner_off, pa.array(flat, pa.float32()))
    else:
        flat = np.concatenate(vectors).astype(np.float32) if len(vectors) else np.zeros((0, dim), np.float32)
        inner = _fixed_list(flat.reshape(-1, dim))
    return pa.ListArray.from_arrays(offsets, inner)


def sql_in_list(values: Iterable[str]) -> str:
    """`('a', 'b')` for a SQL `IN`, quotes escaped (LanceDB filters are SQL strings)."""
    return "(" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + ")"


def _connect(uri: str, **kw) -> lancedb.DBConnection:
    """LanceDB, imported on first use: processes that import the indexer without writing an index (the
    Ray engine's actors) do not pay its import (seconds on a loaded 2-core machine)."""
    import lancedb

    return lancedb.connect(uri, **kw)


class Store:
    """An index directory. Open with `Store.open(path, fingerprint)` to write or query vectors, or
    `Store.open(path)` to read what is there (status, listings) without loading a model."""

    def __init__(self, path: Path | str, db: lancedb.DBConnection):
        self.path = objectstore.normalize(path) if objectstore.is_uri(path) else Path(path)  # s3:// stays a URI
        self.db = db
        self._fingerprint: Fingerprint | None = None

    # -- opening -------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: Path | str, fingerprint: Fingerprint | None = None, create: bool = False) -> Store:
        """`path` is a directory, or an `s3://bucket/prefix` URI (credentials and endpoint: objectstore.py)."""
        if objectstore.is_uri(path):
            uri = objectstore.normalize(path)
            try:
                db = _connect(uri, storage_options=objectstore.lance_storage_options())
                store = cls(uri, db)
                return store._opened(fingerprint, create)
            except (OSError, ValueError, RuntimeError) as exc:
                if isinstance(exc, (StoreError, FingerprintMismatch)):
                    raise
                raise StoreError(f"cannot open the index at {uri}: {exc}") from exc
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise StoreError(f"index path {path} exists and is not a directory")
        if not path.exists():
            if not create:
                raise StoreError(f"no index at {path}: build one with `vidsearch index PATH --db {path}`")
            path.mkdir(parents=True)
        return cls(path, _connect(str(path)))._opened(fingerprint, create)

    def _opened(self, fingerprint: Fingerprint | None, create: bool) -> Store:
        store, path = self, self.path
        existing = store._tables()
        if META not in existing:
            if not create:
                raise StoreError(f"{path} is not a vidsearch index (no meta table)")
            store._create_base()
        store._check_schema()
        store._fingerprint = store.stored_fingerprint()
        if fingerprint is not None:
            store.use_fingerprint(fingerprint)
        return store

    def use_fingerprint(self, fingerprint: Fingerprint) -> None:
        """Write vectors of this model: binds a new index to it, and is a clear error on an index built
        with another model."""
        stored = self.stored_fingerprint()
        if stored is None:
            self._bind(fingerprint)
        elif stored.id != fingerprint.id:
            raise FingerprintMismatch(str(self.path), stored, fingerprint)
        self._fingerprint = fingerprint

    def _tables(self) -> set[str]:
        return set(self.db.list_tables().tables)

    def _create_base(self) -> None:
        self.db.create_table(FILES, schema=S.files_schema(), exist_ok=True)
        self.db.create_table(VIDEOS, schema=S.videos_schema(), exist_ok=True)
        self.db.create_table(SPANS, schema=S.spans_schema(), exist_ok=True)
        meta = self.db.create_table(META, schema=S.meta_schema(), exist_ok=True)
        meta.add(pa.table({"key": ["schema_version", "created_at"], "value": [str(S.SCHEMA_VERSION), str(time.time())]}))

    def meta(self) -> dict[str, str]:
        t = self.db.open_table(META).to_arrow()
        return dict(zip(t["key"].to_pylist(), t["value"].to_pylist()))

    def _set_meta(self, key: str, value: str) -> None:
        row = pa.table({"key": [key], "value": [value]}, schema=S.meta_schema())
        self.db.open_table(META).merge_insert("key").when_matched_update_all().when_not_matched_insert_all().execute(row)

    def _check_schema(self) -> None:
        version = int(self.meta().get("schema_version", "0"))
        if version != S.SCHEMA_VERSION:
            raise StoreError(
                f"index {self.path} has schema version {version}, this vidsearch uses {S.SCHEMA_VERSION}: "
                f"rebuild it with `vidsearch reindex PATH... --db {self.path} --rebuild`"
            )

    def stored_fingerprint(self) -> Fingerprint | None:
        raw = self.meta().get("fingerprint")
        return Fingerprint.model_validate_json(raw) if raw else None

    def _bind(self, fp: Fingerprint) -> None:
        self.db.create_table(SEGMENTS, schema=S.segments_schema(fp.dim), exist_ok=True)
        self.db.create_table(FEATURES, schema=S.video_features_schema(fp.dim), exist_ok=True)
        self._set_meta("fingerprint", fp.model_dump_json())

    @property
    def fingerprint(self) -> Fingerprint | None:
        return self._fingerprint

    def rebuild(self, fingerprint: Fingerprint) -> None:
        """Drop every row and re-bind to a new fingerprint (a full reindex follows)."""
        for name in (SEGMENTS, FEATURES, SPANS, VIDEOS, FILES, META):
            if name in self._tables():
                self.db.drop_table(name)
        self._create_base()
        self._bind(fingerprint)
        self._fingerprint = fingerprint

    @contextlib.contextmanager
    def write_lock(self) -> Iterator[None]:
        """One writer per index: a second indexing run fails fast instead of interleaving commits.

        An index on object storage has no file to lock: one writer at a time is the operator's to keep
        (one indexing job per index, as the Ray engine and the server's job queue do); LanceDB's own
        commits stay atomic either way."""
        if isinstance(self.path, str):
            yield
            return
        with index_write_lock(self.path):
            yield

    # -- reading -------------------------------------------------------------------------------
    def table(self, name: str):
        return self.db.open_table(name)

    def files(self) -> pa.Table:
        return self.table(FILES).to_arrow()

    def videos(self, columns: list[str] | None = None) -> pa.Table:
        t = self.table(VIDEOS)
        return t.search().select(columns).limit(None).to_arrow() if columns else t.to_arrow()

    def video_rows(self, video_id: str | None = None) -> list[dict]:
        """`videos` rows as dicts with `metadata` parsed (only that video's row when an id is given)."""
        t = self.table(VIDEOS)
        table = t.to_arrow() if video_id is None else t.search().where(f"video_id IN {sql_in_list([video_id])}").limit(None).to_arrow()
        rows = table.to_pylist()
        for r in rows:
            r["metadata"] = json.loads(r["metadata"] or "{}")
        return rows

    def indexed_ids(self) -> set[str]:
        return set(self.videos(["video_id"])["video_id"].to_pylist())

    def segments(self, columns: list[str] | None = None) -> pa.Table:
        t = self.table(SEGMENTS)
        return t.search().select(columns).limit(None).to_arrow() if columns else t.to_arrow()

    def features(self, video_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(unit_start, unit_end, unit_vectors) of one video."""
        t = (
            self.table(FEATURES)
            .search()
            .where(f"video_id = {sql_in_list([video_id])[1:-1]}")
            .select(["unit_start", "unit_end", "unit_vectors"])
            .limit(None)
            .to_arrow()
        )
        if t.num_rows == 0:
            raise KeyError(video_id)
        starts = np.asarray(t["unit_start"][0].values, dtype=np.float32)
        ends = np.asarray(t["unit_end"][0].values, dtype=np.float32)
        vecs = np.asarray(t["unit_vectors"][0].values.flatten(), dtype=np.float32).reshape(len(starts), -1)
        return starts, ends, vecs

    def stats(self) -> dict:
        files = self.files()
        videos = self.videos(["video_id", "duration", "n_units"])
        failed = files.filter(pc.equal(files["status"], "failed"))
        deleted = files.filter(pc.equal(files["status"], "deleted"))
        fp = self.stored_fingerprint()
        tables = self._tables()
        return {
            "db": str(self.path),
            "schema_version": S.SCHEMA_VERSION,
            "fingerprint": fp.id if fp else None,
            "model": fp.describe() if fp else None,
            "videos": videos.num_rows,
            "files": files.num_rows - deleted.num_rows,
            "failed": failed.num_rows,
            "deleted": deleted.num_rows,
            "hours": round(float(pc.sum(videos["duration"]).as_py() or 0.0) / 3600.0, 4),
            "units": int(pc.sum(videos["n_units"]).as_py() or 0),
            "segments": self.table(SEGMENTS).count_rows() if SEGMENTS in tables else 0,
            "spans": self.table(SPANS).count_rows(),
            "channels": self.channels(),
            "warnings": sorted(
                (
                    {"path": p, "warning": e}
                    for p, e, st in zip(files["path"].to_pylist(), files["error"].to_pylist(), files["status"].to_pylist())
                    if st == "indexed" and e
                ),
                key=lambda w: w["path"],
            ),
            "failures": sorted(
                ({"path": p, "error": e} for p, e in zip(failed["path"].to_pylist(), failed["error"].to_pylist())),
                key=lambda f: f["path"],
            ),
            "excluded": sorted(deleted["path"].to_pylist()),  # deleted by a user: not re-indexed until named again
        }

    # -- writing -------------------------------------------------------------------------------
    def commit(self, batch: list[EncodedVideo]) -> None:
        """Write a batch of videos: vectors first, then the rows that make them visible."""
        if not batch:
            return
        fp = self._require_fingerprint()
        features_table = self.table(FEATURES)
        for column in (S.UNIT_CUES, S.UNIT_SHAPES, S.SOUND_CUES):  # an index made before the motion, shape or sound channel:
            if column.name not in features_table.schema.names:
                features_table.add_columns(column)  # before anything is written, so a failure leaves no rows
        now = time.time()
        n_seg = [len(v.seg_kind) for v in batch]
        vid_per_seg = np.repeat([v.video["video_id"] for v in batch], n_seg)
        seg_idx = np.concatenate([np.arange(n) for n in n_seg]).astype(str)
        kinds = np.concatenate([v.seg_kind for v in batch]).astype(str)
        segments = pa.table(
            {
                "segment_id": pc.binary_join_element_wise(
                    pa.array(vid_per_seg), pa.array(kinds), pa.array(seg_idx), ":"
                ),
                "video_id": pa.array(vid_per_seg),
                "kind": pa.array(kinds),
                "start": pa.array(np.concatenate([v.seg_start for v in batch]).astype(np.float64)),
                "end": pa.array(np.concatenate([v.seg_end for v in batch]).astype(np.float64)),
                "vector": _fixed_list(np.concatenate([v.seg_vectors for v in batch])),
                "fingerprint": pa.array([fp.id] * len(vid_per_seg), pa.string()),
            },
            schema=S.segments_schema(fp.dim),
        )
        has_audio = [v.audio_vectors is not None for v in batch]
        empty = np.zeros(0, np.float32)
        features = pa.table(
            {
                "video_id": [v.video["video_id"] for v in batch],
                "fingerprint": [fp.id] * len(batch),
                "unit_start": pa.array([v.unit_start.astype(np.float32) for v in batch], pa.list_(pa.float32())),
                "unit_end": pa.array([v.unit_end.astype(np.float32) for v in batch], pa.list_(pa.float32())),
                "unit_vectors": _nested([v.unit_vectors for v in batch], fp.dim),
                "audio_start": pa.array(
                    [v.audio_start.astype(np.float32) if a else empty for v, a in zip(batch, has_audio)],
                    pa.list_(pa.float32()),
                ),
                "audio_end": pa.array(
                    [v.audio_end.astype(np.float32) if a else empty for v, a in zip(batch, has_audio)],
                    pa.list_(pa.float32()),
                ),
                "audio_vectors": _nested(
                    [v.audio_vectors if a else np.zeros((0, 0), np.float32) for v, a in zip(batch, has_audio)],
                    None,
                ),
                "unit_cues": _nested([np.zeros((0, 2), np.float32) if v.unit_cues is None else v.unit_cues for v in batch], 2),
                "unit_shapes": _nested([np.zeros((0, 6), np.float32) if v.unit_shapes is None else v.unit_shapes for v in batch], 6),
                "sound_cues": _nested([np.zeros((0, 5), np.float32) if v.sound_cues is None else v.sound_cues for v in batch], 5),
            },
            schema=S.video_features_schema(fp.dim),
        )
        videos = pa.Table.from_pylist(
            [{**v.video, "path": path_key(v.video["path"]), "title": v.video["title"] and readable_name(v.video["title"]), "fingerprint": fp.id, "indexed_at": now} for v in batch],
            schema=S.videos_schema(),
        )
        self.table(SEGMENTS).add(segments)
        features_table.add(features)
        span_rows = [v.span_rows for v in batch if v.span_rows is not None and v.span_rows.num_rows]
        if span_rows:
            self.table(SPANS).add(pa.concat_tables(span_rows))
        self._upsert(VIDEOS, "video_id", videos)
        self.record_files([row for v in batch for row in v.files])

    def record_files(self, rows: list[dict]) -> None:
        if rows:
            now = time.time()
            # paths as keys (store.path_key), and messages that quote a name that is not valid UTF-8 made
            # readable: Arrow stores only valid UTF-8, and one such name must not cost a batch of rows
            rows = [{**r, "path": path_key(r["path"]), "error": r.get("error") and readable_name(r["error"]), "updated_at": now} for r in rows]
            self._upsert(FILES, "path", pa.Table.from_pylist(rows, schema=S.files_schema()))

    def update_video(self, video_id: str, **values) -> None:
        """Change a visible video's descriptive columns (path, title, metadata) in place."""
        self.table(VIDEOS).update(where=f"video_id IN {sql_in_list([video_id])}", values=values)

    def span_rows(self, video_id: str, source: str) -> list[dict]:
        """A video's spans of one source (id, times, text; no vectors)."""
        where = f"video_id IN {sql_in_list([video_id])} AND source IN {sql_in_list([source])}"
        t = self.table(SPANS).search().where(where).select(["span_id", "start", "end", "text"]).limit(None).to_arrow()
        return t.to_pylist()

    def replace_spans(self, remove: Iterable[str], add: pa.Table | None) -> None:
        """Add `spans` rows (an id already there is rewritten, never doubled), then drop the ids in `remove`."""
        if add is not None and add.num_rows:
            self._upsert(SPANS, "span_id", add)
        remove = sorted(set(remove) - set(add["span_id"].to_pylist() if add is not None else []))
        if remove:
            self.table(SPANS).delete(f"span_id IN {sql_in_list(remove)}")

    def _upsert(self, name: str, key: str, data: pa.Table) -> None:
        self.table(name).merge_insert(key).when_matched_update_all().when_not_matched_insert_all().execute(data)

    def delete_videos(self, video_ids: Iterable[str]) -> int:
        """Remove videos as a user asks: gone from search, and kept out of later runs over their folders
        (their `files` rows stay, marked `deleted`, until a file is named again: see `IndexRun.plan`)."""
        ids = sorted(set(video_ids))
        if not ids:
            return 0
        self._mark_deleted(f"video_id IN {sql_in_list(ids)}")
        return self.purge_videos(ids)

    def delete_paths(self, paths: Iterable[str]) -> int:
        """Remove files as a user asks: each path is kept out of later runs; its content leaves the index
        only when no other indexed file still points at it. Returns the number of videos removed."""
        paths = sorted(set(paths))
        if not paths:
            return 0
        where = f"path IN {sql_in_list(paths)}"
        touched = set(self.table(FILES).search().where(where).select(["video_id"]).limit(None).to_arrow()["video_id"].to_pylist())
        self._mark_deleted(where)
        return self.purge_videos((touched - {None}) - self.referenced_ids())

    def failed_content(self) -> dict[str, tuple[str, str]]:
        """Content hash -> (path, error) of files that failed after their content was hashed."""
        files = self.files()
        failed = files.filter(pc.and_(pc.equal(files["status"], "failed"), pc.is_valid(files["video_id"])))
        out: dict[str, tuple[str, str]] = {}
        for vid, path, error in sorted(zip(failed["video_id"].to_pylist(), failed["path"].to_pylist(), failed["error"].to_pylist())):
            if "which failed:" not in (error or ""):
                out.setdefault(vid, (path, error))
        return out

    def referenced_ids(self) -> set[str]:
        """Videos that at least one indexed file points at."""
        files = self.files()
        indexed = files.filter(pc.equal(files["status"], "indexed"))
        return set(indexed["video_id"].to_pylist()) - {None}

    def _mark_deleted(self, where: str) -> None:
        self.table(FILES).update(where=where, values={"status": "deleted", "updated_at": time.time()})

    def purge_videos(self, video_ids: Iterable[str]) -> int:
        """Remove videos' rows from every table (visibility row first, so readers never see a half video);
        `files` rows that record a user's delete are kept."""
        ids = sorted(set(video_ids))
        if not ids:
            return 0
        where = f"video_id IN {sql_in_list(ids)}"
        before = self.table(VIDEOS).count_rows()
        self.table(VIDEOS).delete(where)
        removed = before - self.table(VIDEOS).count_rows()
        for name in (SEGMENTS, FEATURES, SPANS):
            if name in self._tables():
                self.table(name).delete(where)
        self.table(FILES).delete(f"{where} AND status != 'deleted'")
        return removed

    def forget_files(self, paths: Iterable[str]) -> None:
        """Drop `files` rows (files that are gone from disk)."""
        paths = sorted(set(paths))
        if paths:
            self.table(FILES).delete(f"path IN {sql_in_list(paths)}")

    def remove_orphans(self) -> int:
        """Delete rows whose video never became visible (a run killed between writes)."""
        visible = self.indexed_ids()
        removed = 0
        for name in (SEGMENTS, FEATURES, SPANS):
            if name not in self._tables():
                continue
            t = self.table(name)
            ids = set(pc.unique(t.search().select(["video_id"]).limit(None).to_arrow()["video_id"]).to_pylist())
            orphans = ids - visible
            if orphans:
                t.delete(f"video_id IN {sql_in_list(orphans)}")
                removed += len(orphans)
        return removed

    def index_text(self) -> None:
        """(Re)build the full-text (BM25) index over span texts, so search can match words."""
        from lancedb.index import FTS

        self.table(SPANS).create_index("text", config=FTS(), replace=True)

    def record_channels(self, **channels) -> None:
        """Which channels the last run indexed, for `status` and the search service."""
        self._set_meta("channels", json.dumps(channels, sort_keys=True))

    def channels(self) -> dict:
        raw = self.meta().get("channels")
        return json.loads(raw) if raw else {}

    def optimize(self) -> None:
        """Compact small fragments left by many small commits."""
        for name in (SEGMENTS, FEATURES, VIDEOS, FILES):
            if name in self._tables():
                with contextlib.suppress(Exception):
                    self.table(name).optimize()

    def _require_fingerprint(self) -> Fingerprint:
        if self._fingerprint is None:
            raise StoreError("open the store with a model fingerprint before writing vectors")
        return self._fingerprint


def metadata_json(meta: dict | None) -> str:
    return json.dumps(meta or {}, ensure_ascii=False, sort_keys=True)
