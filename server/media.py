"""Media and thumbnails: the bytes a player and a result card need, for the API and (through it) the UI.

Media is served only for indexed videos, looked up by id: no path in a request ever reaches the file
system. A thumbnail is one ffmpeg seek, cut once and kept as a JPEG in `<db>/.thumbs` (or a user
cache directory when the index is read-only), named by video, time and width, so concurrent
requests for the same frame agree on one file; each writes its own temporary file first and moves it
into place. Times are rounded and widths come from a fixed set, and the cache has a size bound, so
anonymous requests cannot make unbounded ffmpeg runs or fill the disk.

Every ffmpeg and ffprobe run for a thumbnail or a clip (clips.py) holds one of a few slots
(`ffmpeg_slot`: the usable cores, at least 2), taken by the route on the event loop. A request waits
for one at most FFMPEG_WAIT seconds, then gets a 503 with Retry-After (`Busy`): 45 anonymous clip
requests for distinct ranges once ran 40 encodes at once (anyio's whole worker pool), and every sync
route waited behind them (/v1/videos 32 s, /healthz 5.5 s). Waiting holds no worker thread: a burst
of 115 thumbnail requests, each waiting for its slot in a thread, held the pool as the clips had
(/v1/videos/{id} 5.3 s, 0.05 s since). ffmpeg runs through `run_tool`, which stops it when the request's client has
gone (a clip's route asks the connection).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import mimetypes
import os
import subprocess
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import anyio
from fastapi import HTTPException

from vidsearch import objectstore
from vidsearch.cores import usable_cores
from vidsearch.indexer.decode import DECORD_FORMATS
from vidsearch.indexer.probe import player_maps

from .library import IndexedFile

T = TypeVar("T")

__all__ = ["MEDIA_TYPES", "THUMB_WAIT", "THUMB_WIDTHS", "Abandoned", "Busy", "cached_thumbnail", "ffmpeg_slot", "last_frame_start", "mark_used", "one_cut",
           "media_type", "one_maker", "Layout", "media_layout", "probe_layout", "run_tool", "thumbnail", "thumbnail_dir", "thumbnail_key",
           "trim_cache"]  # fmt: skip

# every suffix the indexer takes (indexer/discover.py), by hand: the system's `mimetypes` tables differ
# between hosts and read `.ts` as Qt's translation files (text/vnd.trolltech.linguist)
MEDIA_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".f4v": "video/mp4", ".webm": "video/webm", ".mkv": "video/x-matroska",
               ".mov": "video/quicktime", ".ogv": "video/ogg", ".avi": "video/x-msvideo", ".divx": "video/x-msvideo",
               ".wmv": "video/x-ms-wmv", ".asf": "video/x-ms-asf", ".flv": "video/x-flv", ".mpg": "video/mpeg",
               ".mpeg": "video/mpeg", ".vob": "video/mpeg", ".ts": "video/mp2t", ".m2ts": "video/mp2t", ".mts": "video/mp2t",
               ".3gp": "video/3gpp", ".3g2": "video/3gpp2", ".mxf": "application/mxf", ".gif": "image/gif",
               ".m2t": "video/mp2t", ".trp": "video/mp2t", ".tp": "video/mp2t", ".tod": "video/mp2t", ".mod": "video/mpeg",
               ".m2v": "video/mpeg", ".mpe": "video/mpeg", ".m1v": "video/mpeg", ".dv": "video/x-dv", ".wtv": "video/x-ms-wtv",
               ".dvr-ms": "video/x-ms-dvr", ".ogm": "video/ogg", ".rm": "application/vnd.rn-realmedia",
               ".rmvb": "application/vnd.rn-realmedia-vbr"}  # fmt: skip
THUMB_WIDTHS = (160, 320, 640, 1280)  # the UI asks for 320; a request is served the next size up
THUMB_STEP = 0.1  # seconds: thumbnail times are rounded to this (the UI shows times to 0.01 s, frames differ less)
# in every cached thumbnail's name: a change to how they are made renames them (2: square pixels and the
# indexed track), so a server upgraded in place never serves the old ones; those age out (trim_cache)
THUMB_VERSION = 2
THUMB_CACHE_BYTES = 256 << 20  # the bound of the cache of thumbnails and clips; the least recently used go first


def media_type(path: Path) -> str:
    """The Content-Type of a video file, by its suffix (a browser picks its player by it; `.avi` served
    as application/octet-stream was downloaded instead of played); another suffix is a video or audio
    type the system knows, else application/octet-stream."""
    suffix = Path(path).suffix.lower()
    if suffix in MEDIA_TYPES:
        return MEDIA_TYPES[suffix]
    guessed = mimetypes.guess_type(f"x{suffix}")[0] if suffix else None
    return guessed if guessed and guessed.startswith(("video/", "audio/")) else "application/octet-stream"


def thumbnail_dir(db: Path | str) -> Path:
    """`<db>/.thumbs`; a user cache directory when the index directory cannot be written or the index
    lives in object storage (`s3://bucket/db` is no local folder: taken as a path it would become a
    folder named `s3:` in the working directory). Each object-storage index gets its own folder there,
    named by its URI, so two indexes never share thumbnails."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vidsearch" / "thumbs"
    if objectstore.is_uri(db):
        remote = cache / hashlib.sha1(objectstore.normalize(db).encode()).hexdigest()[:16]
        remote.mkdir(parents=True, exist_ok=True)
        return remote
    primary = Path(db) / ".thumbs"
    try:
        primary.mkdir(parents=True, exist_ok=True)
        if os.access(primary, os.W_OK):
            return primary
    except OSError:
        pass
    cache.mkdir(parents=True, exist_ok=True)
    return cache


def last_frame_start(duration: float, fps: float | None) -> float:
    """When the last frame starts: one frame before the end (at 25 fps where the rate is unknown). A
    seek past it finds no frame, though a player still shows that frame until `duration`."""
    return max(float(duration) - 1.0 / (fps if fps and fps > 0 else 25.0), 0.0)


def thumbnail_key(t: float, width: int, duration: float, fps: float | None) -> tuple[float, int]:
    """The frame a request gets: `t` rounded to THUMB_STEP and kept inside the last frame's interval
    (a seek past the last frame's start finds nothing), `width` the smallest of THUMB_WIDTHS that is at
    least the one asked for. So a short video has a few hundred possible thumbnails, not millions."""
    last = last_frame_start(duration, fps)
    t = round(min(max(float(t), 0.0), last) / THUMB_STEP) * THUMB_STEP
    if t > last:
        t = max(t - THUMB_STEP, 0.0)
    w = next((w for w in THUMB_WIDTHS if w >= width), THUMB_WIDTHS[-1])
    return round(t, 3), w


def _thumbnail_path(cache_dir: Path, video_id: str, t: float, width: int) -> Path:
    return Path(cache_dir) / f"{hashlib.sha1(f'{video_id}:{t:.3f}:{width}:{THUMB_VERSION}'.encode()).hexdigest()}.jpg"


def cached_thumbnail(video_id: str, t: float, width: int, cache_dir: Path) -> bytes | None:
    """The thumbnail cut before (marked used), else None: no ffmpeg, so a route serves it without an
    ffmpeg slot (and answers HEAD from it)."""
    out = _thumbnail_path(cache_dir, video_id, t, width)
    try:
        jpeg = out.read_bytes()
    except FileNotFoundError:  # not cut yet, or trimmed a moment ago
        return None
    mark_used(out)
    return jpeg


def thumbnail(video: IndexedFile | str, video_id: str, t: float, width: int, cache_dir: Path, cache_bytes: int = THUMB_CACHE_BYTES) -> bytes | None:
    """A JPEG of the frame at `t` seconds of an opened, checked file (use `thumbnail_key` first), or
    None when there is none. ffmpeg reads the descriptor, not the path (see `library`); a video in
    object storage is read from a presigned URL, with range requests. In a server the route holds an
    ffmpeg slot (`ffmpeg_slot`) while this runs; a script has no server's cores to share."""
    out = _thumbnail_path(cache_dir, video_id, t, width)
    with one_maker(out):
        return _thumbnail(video, t, width, out, cache_dir, cache_bytes)


@dataclass(frozen=True)
class Layout:
    """What thumbnails and clips need to know of a file, from one ffprobe of the opened file: the `-map`
    arguments for the tracks the index read, and whether the container has an index to seek by."""

    video_map: list[str]
    audio_map: list[str]
    indexed: bool
    probed: bool = True  # False: the probe failed and these are the first tracks, a guess

    def maps(self, audio: bool = True) -> list[str]:
        return [*self.video_map, *(self.audio_map if audio else [])]

    def seek(self, t: float) -> tuple[list[str], list[str]]:
        """ffmpeg arguments to start at player time `t`: (before -i, after it). An input seek is fast and
        exact where the container has an index; in one without (transport and program streams) it lands
        near the time, often on a later keyframe (a thumbnail at 1.5 s showed 4.8 s), so the input is
        sought PREROLL seconds early and cut to `t` by decoding."""
        if self.indexed or t <= 0:
            return ["-ss", f"{t:.3f}"], []
        early = max(t - PREROLL, 0.0)
        return ["-ss", f"{early:.3f}"], ["-ss", f"{t - early:.3f}"]


PREROLL = 10.0


_LAYOUTS: OrderedDict[tuple, Layout] = OrderedDict()  # by the open file's identity (os.fstat), newest last
_LAYOUTS_MAX = 4096
_layouts_lock = threading.Lock()


def media_layout(source: str, fds: tuple[int, ...] = ()) -> Layout:
    """The file's Layout (`probe_layout`), remembered for an opened local file (`fds[0]`) by its device,
    inode, size and modification time: a results page asks for a dozen thumbnails and clips of the same
    videos, and each miss ran the same ffprobe (~40 ms) before its ffmpeg. A file changed in place has
    another size or mtime, so it is probed again."""
    if not fds:
        return probe_layout(source, fds)
    st = os.fstat(fds[0])
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    with _layouts_lock:
        if key in _LAYOUTS:
            _LAYOUTS.move_to_end(key)
            return _LAYOUTS[key]
    layout = probe_layout(source, fds)
    if layout.probed:  # a probe that failed (a timeout under load) is not remembered
        with _layouts_lock:
            _LAYOUTS[key] = layout
            while len(_LAYOUTS) > _LAYOUTS_MAX:
                _LAYOUTS.popitem(last=False)
    return layout


def probe_layout(source: str, fds: tuple[int, ...] = ()) -> Layout:
    """The file's Layout: the tracks as indexer.probe.player_maps picks them (the default-flagged video
    and audio tracks, cover art aside), and an index to seek by where its container is one decord reads
    (indexer.decode.DECORD_FORMATS: those keep one). Where the probe fails: the first tracks, sought early."""
    try:
        proc = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                               "format=format_name:stream=index,codec_type,codec_name:stream_disposition=default,attached_pic",
                               "-of", "json", source], capture_output=True, timeout=30, pass_fds=fds, stdin=subprocess.DEVNULL)  # fmt: skip
        info = json.loads(proc.stdout or b"{}")
    except (OSError, ValueError, subprocess.TimeoutExpired):
        info = {}
    streams = info.get("streams") or []
    indexed = bool(set(str((info.get("format") or {}).get("format_name", "")).split(",")) & DECORD_FORMATS)
    if not streams:
        return Layout(["-map", "0:v:0"], ["-map", "0:a:0?"], indexed, probed=False)
    maps = player_maps(streams, audio=True)
    return Layout(maps[:2], maps[2:], indexed)


# the frame as a player shows it: pixels made square (DV, DVD, anamorphic: `dar` is the display aspect),
# `width` wide, an even height
def _thumb_filter(width: int) -> str:
    return f"scale={width}:trunc({width}/dar/2)*2,setsar=1"


def _thumbnail(video: IndexedFile | str, t: float, width: int, out: Path, cache_dir: Path, cache_bytes: int) -> bytes | None:
    try:
        jpeg = out.read_bytes()  # cut while this request waited for another's cut (one_maker)
        mark_used(out)
        return jpeg
    except FileNotFoundError:  # not cut yet, or trimmed a moment ago
        pass
    if isinstance(video, str):  # an object-storage URI
        source, fds = objectstore.presign(video, seconds=300), ()
    else:
        source, fds = video.proc_path, (video.fd,)
    jpeg = _cut_thumbnail(source, fds, t, width, out, cache_dir)
    if jpeg is not None:
        trim_cache(cache_dir, cache_bytes, keep=out)
    return jpeg


def _cut_thumbnail(source: str, fds: tuple[int, ...], t: float, width: int, out: Path, cache_dir: Path) -> bytes | None:
    """One ffmpeg seek into `out` (through a temporary file); None when it found no frame."""
    layout = media_layout(source, fds)
    before, after = layout.seek(t)
    fd, tmp_name = tempfile.mkstemp(suffix=".tmp.jpg", dir=cache_dir)  # concurrent callers never share a temp file
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        status = run_tool(["ffmpeg", "-nostdin", "-v", "error", "-y", *before, "-i", source, *after, *layout.maps(audio=False),
                           "-frames:v", "1", "-vf", _thumb_filter(width), "-q:v", "4", "-f", "image2", str(tmp)],
                          timeout=60, pass_fds=fds)  # fmt: skip
        jpeg = tmp.read_bytes()
        if status != 0 or not jpeg:
            return None
        tmp.replace(out)
        return jpeg
    except OSError:
        return None
    finally:
        tmp.unlink(missing_ok=True)


# -- ffmpeg's slots --------------------------------------------------------------------------------
FFMPEG_WAIT = 4.0  # seconds a request waits for a slot before its 503
# a thumbnail is one frame (~0.1-0.3 s a cut) and a browser shows a 503 as a broken picture without
# retrying, so a results grid waits longer: waiting holds no thread, only the request
THUMB_WAIT = 20.0
RETRY_AFTER = 5  # seconds, the 503's Retry-After
STOP_POLL = 0.25  # seconds between two looks at whether a running ffmpeg's client is still there


def ffmpeg_slot_count() -> int:
    """How many ffmpeg runs (clips and thumbnails) go at once: the usable cores, at least 2 (one long
    encode must not hold back every thumbnail of a results page)."""
    return max(2, usable_cores())


class Busy(HTTPException):
    """Every ffmpeg slot stayed taken for FFMPEG_WAIT seconds: a 503 with Retry-After. An HTTPException,
    so a route that does not catch it (thumbnails) answers it as it is."""

    def __init__(self, slots: int):
        super().__init__(503, f"the server is busy cutting clips and thumbnails ({slots} at a time); try again in {RETRY_AFTER} s",
                         headers={"Retry-After": str(RETRY_AFTER)})  # fmt: skip


class Abandoned(Exception):
    """The request's client went away while its ffmpeg ran: ffmpeg was stopped, nothing was made."""


_SLOTS: dict[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = {}  # one limiter per event loop
_slots_lock = threading.Lock()


def _slots() -> anyio.CapacityLimiter:
    """This event loop's slots (an anyio limiter belongs to one loop; an in-process app or a test
    client runs the app on a loop of its own). Loops that have closed are forgotten."""
    loop = asyncio.get_running_loop()
    with _slots_lock:
        if loop not in _SLOTS:
            for old in [old for old in _SLOTS if old.is_closed()]:
                del _SLOTS[old]
            _SLOTS[loop] = anyio.CapacityLimiter(ffmpeg_slot_count())
        return _SLOTS[loop]


async def _take(slots: anyio.CapacityLimiter, holder: object, wait: float | None = None) -> None:
    """One slot for `holder`, or Busy once `wait` (FFMPEG_WAIT) seconds have passed (on the event loop:
    waiting holds no thread)."""
    with anyio.move_on_after(FFMPEG_WAIT if wait is None else wait) as waited:
        await slots.acquire_on_behalf_of(holder)  # a wait cut short gives back what it got
    if waited.cancelled_caught:
        raise Busy(int(slots.total_tokens))


@asynccontextmanager
async def ffmpeg_slot(wait: float | None = None) -> AsyncIterator[None]:
    """Hold an ffmpeg slot for an async route (clips, thumbnails); Busy when none frees in FFMPEG_WAIT
    seconds. Waiting is on the event loop and holds no thread: the route hands the run to a worker
    thread once it has its slot."""
    slots, holder = _slots(), object()
    await _take(slots, holder, wait)
    try:
        yield
    finally:
        slots.release_on_behalf_of(holder)


_cutting: dict[tuple, asyncio.Future] = {}  # cuts running now (thumbnails, clips), by what they make


async def one_cut(key: tuple, make: Callable[[], Awaitable[T]]) -> tuple[bool, T | None]:
    """`make()` (which takes an ffmpeg slot and cuts) once for concurrent requests of one key: the
    others wait for it holding no slot, then read the cache (False, None); the one that made it gets
    (True, its result). Each waiter used to take a slot and then wait on the file's lock (`one_maker`),
    so a burst for one new thumbnail or clip held the slots while clips behind it got 503s. Where the
    request making it gives up (its client left, no slot freed in time), a waiting one makes it."""
    while (running := _cutting.get(key)) is not None:
        try:
            await asyncio.shield(running)
            return False, None
        except asyncio.CancelledError:
            if not running.cancelled():
                raise  # this request was cancelled, not the cut it waited for
    done = asyncio.get_running_loop().create_future()
    _cutting[key] = done
    try:
        made = await make()
    except BaseException:
        done.cancel()  # the waiters try themselves (an exception set here would be raised in each, or never read)
        raise
    finally:
        if _cutting.get(key) is done:
            del _cutting[key]
    done.set_result(None)
    return True, made


def run_tool(cmd: list[str], timeout: float, pass_fds: tuple[int, ...] = (), stop: Callable[[], bool] | None = None) -> int | None:
    """Run ffmpeg (or ffprobe) to its end and give its exit status; None when it could not start or
    outlived `timeout` (it is killed). With `stop` (asked every STOP_POLL seconds: has the client
    gone?) it is killed as soon as that is true, and Abandoned is raised: an encode nobody will receive
    ran on for 40 s after its client had given up, holding a core."""
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=pass_fds)
    except OSError:
        return None
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                return proc.wait(timeout=min(left, STOP_POLL) if stop is not None else left)
            except subprocess.TimeoutExpired:
                if stop is not None and stop():
                    raise Abandoned("the client went away") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def trim_cache(cache_dir: Path, cache_bytes: int, keep: Path | None = None) -> None:
    """Keep the cache under `cache_bytes`, thumbnails and clips (clips.py) together: the least recently
    used go first, down to 90%; `keep` (the file just made) stays. Clips once counted nowhere: a client
    asking for ranges a millisecond apart filled the disk with re-encoded clips. A clip being sent
    is read from its open descriptor, which a trim does not disturb."""
    entries = []
    with os.scandir(cache_dir) as it:
        for e in it:
            if ".tmp" in e.name:  # being written
                continue
            try:
                if not e.is_file(follow_symlinks=False):
                    continue
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            entries.append((max(st.st_atime, st.st_mtime), st.st_size, e.path))
    total = sum(size for _, size, _ in entries)
    if total <= cache_bytes:
        return
    for _, size, path in sorted(entries):
        if keep is not None and path == str(keep):
            continue
        Path(path).unlink(missing_ok=True)
        total -= size
        if total <= 0.9 * cache_bytes:
            break


def mark_used(path: Path) -> None:
    """A cached file served again: the most recently used now (trim_cache keeps it longest). Its access
    time says so, not its modification time, which a clip's ETag and Last-Modified are made of."""
    try:
        os.utime(path, ns=(time.time_ns(), os.stat(path).st_mtime_ns))
    except OSError:
        pass


_making: dict[str, list] = {}  # cache path -> [its lock, how many requests hold or wait for it]
_making_guard = threading.Lock()


@contextmanager
def one_maker(path: Path) -> Iterator[None]:
    """Concurrent requests for one file not cached yet wait for the first to make it (one ffmpeg run,
    not one per request: ten requests for one new clip ran ten encodes, each five times slower)."""
    key = str(path)
    with _making_guard:
        entry = _making.setdefault(key, [threading.Lock(), 0])
        entry[1] += 1
    try:
        with entry[0]:
            yield
    finally:
        with _making_guard:
            entry[1] -= 1
            if entry[1] == 0:
                _making.pop(key, None)
