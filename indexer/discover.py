"""Find the videos an operator points at: folders (recursive), single files, or manifest.jsonl.

Folders are walked once; a file is a candidate when its extension says video, or when its extension
says nothing and its first bytes look like a container we can read (so `clip` or `clip.bin` from a
camera dump is not missed, and a folder of PDFs costs one `stat` each, not a probe each).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

VIDEO_EXTENSIONS = {
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".wmv", ".flv", ".mpg", ".mpeg", ".m2ts",
    ".mts", ".ts", ".3gp", ".3g2", ".ogv", ".vob", ".mxf", ".divx", ".f4v", ".asf",
}  # fmt: skip
# Extensions that are certainly not video: never sniffed.
NON_VIDEO_EXTENSIONS = {
    ".txt", ".md", ".json", ".jsonl", ".csv", ".srt", ".vtt", ".ass", ".jpg", ".jpeg", ".png", ".gif",
    ".webp", ".pdf", ".html", ".xml", ".py", ".toml", ".yaml", ".yml", ".zip", ".gz", ".lock", ".lance",
    ".manifest", ".txn", ".wav", ".mp3", ".flac", ".aac", ".m4a", ".ogg", ".opus", ".nfo", ".ini",
}  # fmt: skip
MANIFEST_SUFFIX = ".jsonl"


class DiscoveryError(ValueError):
    """A path or manifest line cannot be used; the message names it."""


@dataclass
class Source:
    """One file to index, with what the operator told us about it."""

    path: Path
    size: int
    mtime: float
    title: str | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return str(self.path)


def _looks_like_video(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return False
    return (
        head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free")  # ISO BMFF (mp4/mov)
        or head.startswith(b"\x1a\x45\xdf\xa3")  # Matroska / WebM
        or (head.startswith(b"RIFF") and head[8:12] == b"AVI ")
        or head.startswith(b"FLV")
        or head.startswith(b"OggS")
        or head.startswith(b"\x00\x00\x01\xba")  # MPEG-PS
        or (len(head) > 0 and head[0] == 0x47 and path.suffix.lower() in ("", ".bin", ".dat"))  # MPEG-TS
        or head.startswith(b"\x30\x26\xb2\x75")  # ASF / WMV
    )


def is_candidate(path: Path) -> bool:
    ext = path.suffix.lower()
    if ext in VIDEO_EXTENSIONS:
        return True
    if ext in NON_VIDEO_EXTENSIONS:
        return False
    return _looks_like_video(path)


def _source(path: Path, title: str | None = None, metadata: dict | None = None) -> Source:
    st = path.stat()
    return Source(path=path.resolve(), size=st.st_size, mtime=st.st_mtime, title=title, metadata=metadata or {})


def _uri_to_path(value: str, base: Path) -> Path:
    parsed = urlparse(value)
    if parsed.scheme in ("", "file") or (len(parsed.scheme) == 1 and os.name == "nt"):
        raw = unquote(parsed.path) if parsed.scheme == "file" else value
        p = Path(raw).expanduser()
        return p if p.is_absolute() else (base / p)
    raise DiscoveryError(
        f"unsupported URI scheme '{parsed.scheme}://' (this build indexes local paths and file:// URIs; "
        f"copy or mount the object store locally)"
    )


def read_manifest(manifest: Path) -> tuple[list[Source], list[tuple[str, str]]]:
    """Sources from a manifest.jsonl, plus (where, problem) for every line that cannot be used."""
    sources: list[Source] = []
    problems: list[tuple[str, str]] = []
    base = manifest.parent
    with open(manifest, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            where = f"{manifest}:{lineno}"
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                if not isinstance(entry, dict) or not isinstance(entry.get("video"), str):
                    raise DiscoveryError('each line must be an object with a "video" string')
                meta = entry.get("metadata") or {}
                if not isinstance(meta, dict):
                    raise DiscoveryError('"metadata" must be an object')
                path = _uri_to_path(entry["video"], base)
                if not path.is_file():
                    raise DiscoveryError(f"video {path} does not exist")
                title = entry.get("title")
                sources.append(_source(path, str(title) if title is not None else None, meta))
            except json.JSONDecodeError as exc:
                problems.append((where, f"not valid JSON: {exc.msg}"))
            except (DiscoveryError, OSError) as exc:
                problems.append((where, str(exc)))
    return sources, problems


def discover(paths: list[Path]) -> tuple[list[Source], list[tuple[str, str]]]:
    """Every candidate video under `paths`, deduplicated by resolved path, in a stable order."""
    found: dict[str, Source] = {}
    problems: list[tuple[str, str]] = []
    for given in paths:
        given = Path(given)
        if not given.exists():
            problems.append((str(given), "path does not exist"))
        elif given.is_dir():
            for root, dirs, files in os.walk(given):
                dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not d.endswith(".lance"))
                for name in sorted(files):
                    p = Path(root) / name
                    if not name.startswith(".") and p.is_file() and is_candidate(p):
                        src = _source(p)
                        found.setdefault(src.key, src)
        elif given.suffix.lower() == MANIFEST_SUFFIX:
            srcs, probs = read_manifest(given)
            problems.extend(probs)
            for src in srcs:
                found[src.key] = src  # a manifest's title/metadata win over a plain folder listing
        else:
            src = _source(given)
            found.setdefault(src.key, src)
    return sorted(found.values(), key=lambda s: s.key), problems
