"""Find the videos an operator points at: folders (recursive), single files, or manifest.jsonl.

Folders are walked once; a file is a candidate when its extension says video, or when its extension
says nothing and its first bytes look like a container we can read (so `clip` or `clip.bin` from a
camera dump, or a DVB recording saved as `.rec`, is not missed, and a folder of PDFs costs one `stat`
each, not a probe each).

What a walk takes, and what it reports instead of taking (each report becomes a failed `files` row
with its reason, so nothing vanishes without a word):
- Files are listed under the path walked (a symlink under its own name, not its target's), so a
  failure names the file in the library.
- Hidden files and folders (names starting with "."), including macOS `._` companion files, are skipped.
- Only regular files are read: a FIFO or device named like a video, or a manifest, is reported, never
  opened for reading (it would block a reader forever); sniffing opens without blocking and checks first.
- A server job passes its library roots (`roots`): manifest entries and symbolic links that resolve
  outside them are reported and never read. The CLI passes none.
- A symbolic link to a file or folder inside the library is taken as a file (the content hash makes
  it one video with two paths) or skipped as a folder (its content is walked where it lies, and a link
  back up the tree cannot loop). A link that leads **outside** the library is reported and not followed
  unless the operator allows it (`follow_symlinks`, off by default: a library should not index what
  lies elsewhere by accident); a broken link is reported. Folders are never walked twice.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import unquote_to_bytes, urlparse

from vidsearch import objectstore
from vidsearch.store import local_path, path_key

from .probe import file_kind

VIDEO_EXTENSIONS = {
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".wmv", ".flv", ".mpg", ".mpeg", ".m2ts",
    ".mts", ".ts", ".3gp", ".3g2", ".ogv", ".vob", ".mxf", ".divx", ".f4v", ".asf", ".gif",
    # camcorders and set-top boxes: HDV tape captures (.m2t), DVB recordings (.trp, .tp), JVC (.tod)
    # camcorders, MiniDV captures (.dv), Windows Media Center (.wtv, .dvr-ms); Panasonic/JVC SD .MOD files
    # are MPEG program streams, found by sniffing (.mod is also a tracker-music format, which must not fail)
    ".m2t", ".trp", ".tp", ".tod", ".dv", ".wtv", ".dvr-ms", ".m2v", ".mpe", ".m1v", ".ogm", ".rm", ".rmvb",
    # raw H.264/HEVC from dash and security cameras (no container: indexed where ffprobe finds a length)
    ".h264", ".264", ".h265", ".265", ".hevc",
}  # fmt: skip  (.gif: animated GIFs are short videos; a one-frame GIF fails as "a still image")
# Other names (.rec, .dif, .bin, none at all) are sniffed: a transport stream or DV file is a video
# whatever it is called.
# Extensions that are certainly not video: never sniffed.
NON_VIDEO_EXTENSIONS = {
    ".txt", ".md", ".json", ".jsonl", ".csv", ".srt", ".vtt", ".ass", ".ssa", ".jpg", ".jpeg", ".png",
    ".webp", ".pdf", ".html", ".xml", ".py", ".toml", ".yaml", ".yml", ".zip", ".gz", ".lock", ".lance",
    ".manifest", ".txn", ".wav", ".mp3", ".flac", ".aac", ".m4a", ".ogg", ".opus", ".nfo", ".ini",
    ".sub", ".idx",  # subtitles: MicroDVD text, or a VobSub pair (an MPEG program stream that sniffing would take for a video)
}  # fmt: skip
MANIFEST_SUFFIX = ".jsonl"
# The manifest keys whose text is searched (sidecar.metadata_spans): a row may also give them beside
# "metadata" rather than in it; other keys of a row are not read (a server path in a flat column would
# otherwise be shown to every reader as metadata)
DESCRIPTION_KEYS = ("description", "summary", "caption", "synopsis")
TAG_KEYS = ("tags", "keywords", "categories")
# How a failure of the file system (not of the content) begins: such failures go away without the file
# changing (permissions fixed, a drive back), so runs look again (pipeline.plan, _clear_solved_problems)
READ_ERROR = "cannot read file"
LIST_ERROR = "cannot list folder"


class DiscoveryError(ValueError):
    """A path or manifest line cannot be used; the message names it."""


@dataclass
class Source:
    """One file to index, with what the operator told us about it."""

    path: Path  # for an object in S3, its key as a PurePosixPath (name and stem); read it through `uri`
    size: int
    mtime: float
    title: str | None = None
    metadata: dict = field(default_factory=dict)
    uri: str | None = None  # s3://bucket/key for an object in object storage (remote.py)
    etag: str | None = None

    @property
    def key(self) -> str:
        """The path the index stores: the s3:// URI, the local path, or for a name that is not valid UTF-8
        its lossless `file://` form (store.path_key)."""
        return self.uri or path_key(self.path)

    @classmethod
    def from_key(cls, key: str, size: int, mtime: float) -> Source:
        """A source rebuilt from a `files` row's path (a local path or an s3:// URI)."""
        if objectstore.is_uri(key):
            return cls(PurePosixPath(objectstore.S3Uri.parse(key).name), size, mtime, uri=objectstore.normalize(key))
        return cls(Path(local_path(key)), size, mtime)


def open_regular(path: Path):
    """A binary file object for `path`, or DiscoveryError when it is not a regular file. The open does not
    block (O_NONBLOCK), and the check is on the opened file (fstat): a FIFO named `jobs.jsonl` would
    otherwise hold its reader in open() until something writes to it (a server job, and the index's
    write lock with it, hung until restart)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise DiscoveryError(f"cannot read: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise DiscoveryError(f"not a regular file ({file_kind(mode)}): not read")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


TS_PACKET = 188
SNIFF_BYTES = 4 * 192  # enough for four M2TS (192-byte) packets


def _is_transport_stream(head: bytes) -> bool:
    """MPEG-TS (188-byte packets) or M2TS (a 4-byte timestamp before each): the 0x47 sync byte at the
    start of every packet read. One 0x47 alone is any text starting with "G"; three or more in step
    is a transport stream, whatever the file is called (.trp, .rec, .tod, no suffix)."""
    for offset, step in ((0, TS_PACKET), (4, TS_PACKET + 4)):
        starts = range(offset, len(head), step)
        if len(starts) >= 3 and all(head[i] == 0x47 for i in starts):
            return True
    return False


def _is_dv(head: bytes) -> bool:
    """A raw DV (DIF) stream, as MiniDV captures are saved: its first DIF block is a header block
    (1F 07 00) whose next byte says NTSC (3F) or PAL (BF), the test ffmpeg's own DV probe makes."""
    return len(head) >= 4 and head[:3] == b"\x1f\x07\x00" and head[3] & 0x7F == 0x3F


def _looks_like_video(path: Path) -> bool:
    """Whether the first bytes are a container ffmpeg reads as video (one read, no probe). Only a regular
    file is read (open_regular): a FIFO behind a link would block the walk in open()."""
    try:
        with open_regular(path) as fh:
            head = fh.read(SNIFF_BYTES)
    except (OSError, DiscoveryError):
        return False
    return (
        head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free")  # ISO BMFF (mp4/mov)
        or head.startswith(b"\x1a\x45\xdf\xa3")  # Matroska / WebM
        or (head.startswith(b"RIFF") and head[8:12] in (b"AVI ", b"CDXA"))  # AVI; a Video CD's AVSEQ01.DAT
        or head.startswith(b"FLV")
        or head.startswith(b"OggS")
        or head.startswith(b"\x00\x00\x01\xba")  # MPEG-PS (.mod, .vob, .mpg)
        or head.startswith(b"\x00\x00\x01\xb3")  # MPEG-1/2 video elementary stream (.m2v)
        or _is_transport_stream(head)
        or _is_dv(head)
        or head.startswith(b"\x30\x26\xb2\x75")  # ASF / WMV
    )


PROXY_SUFFIXES = (".lrv", ".lrf")  # low-resolution proxies: GoPro, DJI
FULL_SUFFIXES = (".mp4", ".mov")


def proxy_of(name: str, names: set[str]) -> str | None:
    """The full-resolution recording in the same folder that `name` is a camera's low-resolution proxy
    of (`names`: the folder's file names, lower case), else None. GoPro writes `GL010001.LRV` beside
    `GX010001.MP4` (or `GH...`; older cameras `GOPR0001.LRV` beside `GOPR0001.MP4`), DJI `DJI_0001.LRF`
    beside `DJI_0001.MP4`: indexing the proxy too put every moment in the results twice. A proxy whose
    original is not there (only proxies copied off the card) is indexed: it is all there is."""
    lower = name.lower()
    stem, dot, suffix = lower.rpartition(".")
    if not dot or "." + suffix not in PROXY_SUFFIXES:
        return None
    stems = [stem] + ([prefix + stem[2:] for prefix in ("gx", "gh")] if stem.startswith("gl") else [])
    return next((f"{s}{ext}" for s in stems for ext in FULL_SUFFIXES if f"{s}{ext}" in names), None)


def is_candidate(path: Path) -> bool:
    ext = path.suffix.lower()
    if ext in VIDEO_EXTENSIONS:
        return True
    if ext in NON_VIDEO_EXTENSIONS:
        return False
    return _looks_like_video(path)


def _source(path: Path, title: str | None = None, metadata: dict | None = None) -> Source:
    st = path.stat()
    return Source(path=_key_path(path), size=st.st_size, mtime=st.st_mtime, title=title, metadata=metadata or {})


def _key_path(path: Path) -> Path:
    """Absolute and normalised, but not resolved: a file is known by the path the operator sees."""
    return Path(os.path.abspath(path))


def where_key(path: str | os.PathLike) -> str:
    """How a problem with a local path is keyed: as the file would be (absolute, then store.path_key)."""
    return path_key(_key_path(Path(path)))


def link_problem(path: Path) -> str:
    """Why a symbolic link cannot be followed: a loop (`a -> b -> a`, `self -> self`) or a broken link."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"symbolic link loop (points to {os.readlink(path)})"
    return f"broken symbolic link (points to {os.readlink(path)})"


def _uri_to_path(value: str, base: Path) -> Path:
    parsed = urlparse(value)
    if parsed.scheme in ("", "file") or (len(parsed.scheme) == 1 and os.name == "nt"):
        # a file:// URI's escapes are bytes: %E9 is the byte of a name that is not valid UTF-8, as the
        # index itself stores such a name (store.path_key), so its own URIs can be listed back to it
        raw = os.fsdecode(unquote_to_bytes(parsed.path)) if parsed.scheme == "file" else value
        p = Path(raw).expanduser()
        return p if p.is_absolute() else (base / p)
    raise DiscoveryError(
        f"unsupported URI scheme '{parsed.scheme}://' (videos are local paths, file:// or s3:// URIs)"
    )


def under(real: str, roots: list[str]) -> bool:
    """Whether the resolved path `real` is one of `roots` or inside one."""
    return any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def _resolved_root(root: str | os.PathLike) -> str:
    """A library root as it is compared: a local one resolved (a root that is a link counts where it
    leads), an s3:// one normalised."""
    text = os.fspath(root)
    return objectstore.normalize(text) if objectstore.is_uri(text) else os.path.realpath(os.path.expanduser(text))


def resolved_roots(roots: list[str | os.PathLike] | None) -> list[str] | None:
    """Library roots as compared (_resolved_root); None: no restriction."""
    return None if roots is None else [_resolved_root(r) for r in roots]


def outside_roots(location: str | Path, roots: list[str]) -> bool:
    """Whether a local path (once resolved: `..` and links followed) or an s3:// URI lies outside every
    root of its kind (resolved_roots)."""
    if objectstore.is_uri(str(location)):
        uri = objectstore.normalize(str(location))
        return not any(uri == r or uri.startswith(r.rstrip("/") + "/") for r in roots if objectstore.is_uri(r))
    try:
        real = os.path.realpath(location)
    except (OSError, ValueError):
        return True
    return not under(real, [r for r in roots if not objectstore.is_uri(r)])


def read_manifest(manifest: Path, roots: list[str] | None = None) -> tuple[list[Source], list[tuple[str, str]]]:
    """Sources from a manifest.jsonl, plus (where, problem) for every line that cannot be used. A line is
    keyed `MANIFEST:N` with the manifest's absolute path, like every other failure; one bad line (not
    UTF-8, not JSON, nested too deep for the parser) costs that line only. A UTF-8 BOM is allowed.

    `roots` (a server job: its library roots) holds every entry to them: one that resolves elsewhere is
    reported and never read, before it is even looked at, so the answer does not say what exists outside.
    None (the CLI: the operator names what it indexes) follows every entry. A manifest that is not a
    regular file, or cannot be opened, is one problem keyed by its path."""
    sources: list[Source] = []
    problems: list[tuple[str, str]] = []
    lines: dict[str, int] = {}  # a video's key -> the line that named it first (that row is used)
    base = manifest.parent
    key = where_key(manifest)
    roots = resolved_roots(roots)
    try:
        fh = open_regular(manifest)
    except DiscoveryError as exc:
        return [], [(key, str(exc))]
    with fh:
        for lineno, raw in enumerate(fh, 1):
            where = f"{key}:{lineno}"
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # saved by Excel or Notepad
            if not raw.strip():
                continue
            try:
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise DiscoveryError(f"line is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); save the manifest as UTF-8") from None
                try:
                    entry = json.loads(line)
                except RecursionError:
                    raise DiscoveryError("line is nested too deeply to parse") from None
                if not isinstance(entry, dict) or not isinstance(entry.get("video"), str):
                    raise DiscoveryError('each line must be an object with a "video" string')
                meta = entry.get("metadata") or {}
                if not isinstance(meta, dict):
                    raise DiscoveryError('"metadata" must be an object')
                # a description or tags beside "metadata" count as if in it (which wins where both name one):
                # a row written flat lost its description without a word
                meta = {**{k: entry[k] for k in (*DESCRIPTION_KEYS, *TAG_KEYS) if k in entry}, **meta}
                remote = objectstore.is_uri(entry["video"])
                path = None if remote else _uri_to_path(entry["video"], base)
                if roots is not None and outside_roots(entry["video"] if remote else path, roots):
                    # checked before the file is looked at: the answer must not say what exists out there
                    raise DiscoveryError(f"video {entry['video'][:200]} is outside the server's library roots: not read")
                if remote:
                    from .remote import manifest_object  # remote.py imports this module

                    sources.append(manifest_object(objectstore.normalize(entry["video"]), entry.get("title"), meta))
                    continue
                if not path.exists():
                    raise DiscoveryError(f"video {path} does not exist")
                if path.is_dir():
                    raise DiscoveryError(f"video {path} is a folder, not a video file (list the folder itself to index what it holds)")
                if not path.is_file():
                    raise DiscoveryError(f"video {path} is not a regular file ({file_kind(path.stat().st_mode)})")
                title = entry.get("title")
                src = _source(path, str(title) if title is not None else None, meta)
                if src.key in lines:  # a later row for the same file replaced the first's text, with no word
                    raise DiscoveryError(f"names the same video as line {lines[src.key]} ({path}), whose title and metadata are used")
                lines[src.key] = lineno
                sources.append(src)
            except json.JSONDecodeError as exc:
                problems.append((where, f"not valid JSON: {exc.msg}"))
            except (DiscoveryError, OSError) as exc:
                problems.append((where, str(exc)))
    return sources, problems


class _Walk:
    """One walk over the operator's paths, collecting sources and problems."""

    def __init__(self, roots: list[Path], follow_symlinks: bool, limit: list[str] | None = None):
        self.roots = [os.path.realpath(r) for r in roots if Path(r).is_dir()]
        self.follow = follow_symlinks
        self.limit = limit  # a server's library roots: no link is followed out of them, allowed or not
        self.found: dict[str, Source] = {}
        self.problems: list[tuple[str, str]] = []
        self.visited: set[str] = set()

    def inside(self, real: str) -> bool:
        return any(real == r or real.startswith(r + os.sep) for r in self.roots)

    def folder(self, folder: Path) -> None:
        real = os.path.realpath(folder)
        if real in self.visited:
            return
        self.visited.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            self.problems.append((where_key(folder), f"{LIST_ERROR}: {exc.strerror or exc}"))
            return
        names = {e.name.lower() for e in entries}
        for entry in entries:
            if entry.name.startswith(".") or proxy_of(entry.name, names):
                continue
            path = Path(entry.path)
            try:
                if entry.is_symlink():
                    self.link(path)
                elif entry.is_dir():
                    if not entry.name.endswith(".lance"):
                        self.folder(path)
                else:
                    self.file(path, entry.stat(), named=False)
            except OSError as exc:
                self.problems.append((where_key(path), f"cannot read: {exc.strerror or exc}"))

    def link(self, path: Path) -> None:
        target = os.path.realpath(path)
        if self.limit is not None and outside_roots(target, self.limit):
            # a server job never follows a link out of its library roots, whatever follow_symlinks says,
            # and says the same whether the target exists or not (no probing of the server's disk)
            self.problems.append((where_key(path), "symbolic link leads outside the server's library roots: not followed"))
            return
        if not os.path.exists(target):
            self.problems.append((where_key(path), link_problem(path)))
            return
        inside = self.inside(target)
        if os.path.isdir(target):
            if inside:
                return  # walked where it lies; a link back up the tree must not loop
            if self.follow:
                self.folder(path)
            else:
                self.problems.append((where_key(path), f"symbolic link to a folder outside the library ({target}): not followed (allow with --follow-symlinks)"))
            return
        if not inside and not self.follow:
            if is_candidate(Path(target)):
                self.problems.append((where_key(path), f"symbolic link leads outside the library ({target}): not followed (allow with --follow-symlinks)"))
            return
        self.file(path, path.stat(), named=False)

    def file(self, path: Path, st: os.stat_result, named: bool) -> None:
        key = where_key(path)
        if not stat.S_ISREG(st.st_mode):
            if named or path.suffix.lower() in VIDEO_EXTENSIONS:
                self.problems.append((key, f"not a regular file ({file_kind(st.st_mode)}): not read"))
            return
        if named or is_candidate(path):
            self.found.setdefault(key, Source(path=_key_path(path), size=st.st_size, mtime=st.st_mtime))


def discover(paths: list[Path], follow_symlinks: bool = False, roots: list[str] | None = None) -> tuple[list[Source], list[tuple[str, str]]]:
    """Every candidate video under `paths`, deduplicated by path, in a stable order, plus (where,
    problem) for what was found and cannot be used. `s3://` prefixes, objects and manifests are listed
    by remote.py.

    `roots`: a server job's library roots (its paths were checked against them already). What the paths
    lead to is held to them too: a manifest's entries and symbolic links that resolve elsewhere are
    reported, never read. None (the CLI) keeps no such restriction."""
    roots = resolved_roots(roots)
    remote = [objectstore.normalize(p) for p in paths if objectstore.is_uri(p)]
    paths = [p for p in paths if not objectstore.is_uri(p)]
    walk = _Walk([Path(p) for p in paths], follow_symlinks, roots)
    if remote:
        from .remote import discover_uri  # remote.py imports this module

        for uri in remote:
            srcs, probs = discover_uri(uri)
            walk.problems.extend(probs)
            for src in srcs:
                walk.found[src.key] = src
    for given in paths:
        given = Path(given)
        if not given.exists() and not given.is_symlink():
            walk.problems.append((path_key(given), "path does not exist"))
        elif not given.exists():
            walk.problems.append((where_key(given), link_problem(given)))
        elif given.is_dir():
            walk.folder(given)
        elif given.suffix.lower() == MANIFEST_SUFFIX:
            srcs, probs = read_manifest(given, roots)
            walk.problems.extend(probs)
            for src in srcs:
                walk.found[src.key] = src  # a manifest's title/metadata win over a plain folder listing
        else:
            walk.file(given, given.stat(), named=True)  # a file the operator names is taken as it is
    return sorted(walk.found.values(), key=lambda s: s.key), walk.problems
