"""Text that arrives next to a video: subtitle files and the manifest's title, description and tags.

Both are free, exact and human-written, so they are the cheapest text channels to index: subtitles
place each line in time without running ASR, and metadata answers queries about what a video is
(`source="metadata"` spans cover the whole video, 0 to duration).

Subtitles are found by name, the way players find them: for `talk.mp4`, `talk.srt`, `talk.vtt`,
`talk.ass`, `talk.en.srt`, `talk.pt-BR.forced.vtt`. A name that belongs to another video in the folder
(`talk.part2.srt` when `talk.part2.mp4` exists) is left to that video. Subtitles can also travel
inside the video (an MKV's SubRip or ASS track, an MP4's mov_text): every text track is read
(`embedded_subtitle_spans`), and so are the closed captions a TV recording carries in its pictures
(`closed_caption_spans`). SRT and WebVTT are parsed here; ASS/SSA files and embedded tracks are
converted to SRT by ffmpeg first (it already reads every format; styling and positioning are not
words). Bitmap tracks (Blu-ray PGS, DVD, DVB) hold pictures of text, not text: they are not read.

Subtitle files from the wild are messy: BOMs (UTF-8 and UTF-16), CRLF or bare CR, Latin-1 text, missing
blank lines, cue numbers out of order, broken timing lines, HTML/ASS styling tags. The parser takes
what it can: a cue it cannot read is skipped with a warning naming the file and line; it never raises
on content.
"""

from __future__ import annotations

import html
import logging
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

from vidsearch.encoders.sentence import TextSpan

from .discover import VIDEO_EXTENSIONS
from .probe import failure_line, is_url

log = logging.getLogger(__name__)

__all__ = [
    "SUBTITLE_EXTENSIONS",
    "Cue",
    "SubtitleTrack",
    "clean_cue_text",
    "decode_text",
    "embedded_subtitle_spans",
    "closed_caption_spans",
    "find_subtitles",
    "metadata_spans",
    "parse_srt",
    "parse_subtitles",
    "parse_vtt",
    "read_subtitles",
    "sidecar_spans",
    "subtitle_spans",
    "unique_subtitles",
]

SUBTITLE_EXTENSIONS = (".srt", ".vtt", ".ass", ".ssa")
CONVERTED_EXTENSIONS = (".ass", ".ssa")  # read through ffmpeg's SRT output (ffmpeg_srt)
FFMPEG_SUBTITLE_TIMEOUT = 600  # seconds: an embedded track is read by demuxing the whole file
_TIME = r"(?:(\d+):)?(\d{1,2}):(\d{1,2})(?:[,.](\d{1,3}))?"
_TIMING = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}(?:\s|$)")
_TAG = re.compile(r"<[^<>\n]*>")  # <i>, </b>, <font ...>, <v Bob>, <c.yellow>, <00:00:01.000>
_ASS = re.compile(r"\{\\[^}]*\}")  # {\an8}, {\i1}: ASS overrides that survive conversion to SRT
_LANG_PART = re.compile(r"^[A-Za-z0-9_-]{1,12}$")


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class SubtitleTrack:
    path: Path
    lang: str | None  # from the name (`talk.en.srt` -> "en"); None for `talk.srt`
    cues: tuple[Cue, ...]


# -------------------------------------------------------------------------------------------- finding


@lru_cache(maxsize=64)
def _folder_subtitles(folder: str, mtime_ns: int) -> tuple[frozenset[str], frozenset[str], tuple[tuple[str, str], ...]]:
    """A folder's video stems (as they are, and case-folded) and its subtitle files (name, stem), once
    per change: every video of a folder of thousands asks (each run looks for subtitles added beside
    unchanged videos)."""
    names = _listing(folder, mtime_ns)
    videos = frozenset(Path(n).stem for n in names if Path(n).suffix.lower() in VIDEO_EXTENSIONS)
    folded = frozenset(v.casefold() for v in videos)
    return videos, folded, tuple((n, Path(n).stem) for n in names if Path(n).suffix.lower() in SUBTITLE_EXTENSIONS)


@lru_cache(maxsize=64)
def _listing(folder: str, mtime_ns: int) -> tuple[str, ...]:
    """A folder's names, listed once per change: a library folder holding thousands of videos is
    scanned once, not once per video."""
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        log.warning("cannot list %s for subtitle files: %s", folder, exc.strerror or exc)
        return ()
    names = []
    for e in entries:
        try:
            if e.is_file():
                names.append(e.name)
        except OSError:  # a symbolic link loop (`self.mp4 -> self.mp4`) costs that name, not the folder's subtitles
            continue
    return tuple(sorted(names))


def _names_video(base: str, stem: str, exact: bool) -> str | None:
    """What follows `stem` in a subtitle's base name: "" for `talk`, "en" for `talk.en`; None when the
    base does not start with the stem. Letter case counts when `exact`; otherwise not (a Windows or
    macOS library holds `Holiday.mp4` + `holiday.srt`, and players there pair them)."""
    head = base[: len(stem)]
    if not (head == stem if exact else head.casefold() == stem.casefold()):
        return None
    if len(base) == len(stem):
        return ""
    return base[len(stem) + 1 :] if base[len(stem)] == "." else None


def _claimed_exactly(base: str, videos: frozenset[str], stem: str) -> bool:
    """Whether another video of the folder names this subtitle with its exact case (`holiday.srt` and
    `holiday.en.srt` are `holiday.mp4`'s, not `Holiday.mp4`'s): its base, or a part of it up to a dot,
    is that video's stem. A set lookup per dot, not a scan of the folder's videos."""
    cuts = [i for i, ch in enumerate(base) if ch == "."] + [len(base)]
    return any(base[:i] in videos and base[:i] != stem for i in cuts)


def find_subtitles(video: str | os.PathLike, roots: list[str] | None = None) -> list[tuple[Path, str | None]]:
    """(path, language tag or None) for each subtitle file that names this video, plain name first.

    Names are matched as players match them, letter case aside: `holiday.srt` is `Holiday.mp4`'s. An
    exact-case name wins over one that differs only in case for the same language and format
    (`Holiday.srt` over `holiday.srt`), and a name that another video of the folder matches with its
    exact case (`holiday.srt` beside `holiday.mp4`) is that video's. `roots` (a server job's library
    roots): a subtitle file that resolves outside them (a link) is not read."""
    video = Path(video)
    folder = video.parent
    try:
        videos_here, folded_videos, subtitles = _folder_subtitles(str(folder), folder.stat().st_mtime_ns)
    except OSError:
        return []
    stem = video.stem
    exact_found: list[tuple[Path, str | None]] = []
    loose_found: list[tuple[Path, str | None]] = []
    for name, base in subtitles:  # base: "talk" or "talk.en" or "talk.en.forced"
        middle = _names_video(base, stem, exact=True)
        exact = middle is not None
        if not exact:
            middle = _names_video(base, stem, exact=False)
            if middle is None or _claimed_exactly(base, videos_here, stem):
                continue
        if middle:
            parts = middle.split(".")
            if len(parts) > 2 or not all(_LANG_PART.match(x) for x in parts):
                continue
            if base.casefold() in folded_videos:  # `talk.part2.srt` is `talk.part2.mp4`'s
                continue
        (exact_found if exact else loose_found).append((folder / name, middle or None))

    def slot(item: tuple[Path, str | None]) -> tuple[str | None, str]:
        return (item[1].casefold() if item[1] else None, item[0].suffix.lower())

    taken = {slot(x) for x in exact_found}
    found = list(exact_found)
    for item in loose_found:
        if slot(item) not in taken:  # one of the names that differ only in case, where none is exact
            taken.add(slot(item))
            found.append(item)
    if roots is not None:
        from .discover import outside_roots, resolved_roots

        allowed = resolved_roots(roots)
        found = [f for f in found if not outside_roots(f[0], allowed)]
    found.sort(key=lambda x: (x[1] is not None, x[1] or "", x[0].suffix.lower()))
    return found


# -------------------------------------------------------------------------------------------- reading


def decode_text(data: bytes, where: str = "") -> str:
    """Text from a subtitle file's bytes: BOMs honoured, UTF-8 assumed, Windows-1252 (the usual
    legacy encoding for subtitles) or Latin-1 as fallbacks; newlines normalised to \\n."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = data.decode("utf-16", errors="replace")
    elif data.startswith(b"\xef\xbb\xbf"):
        text = data[3:].decode("utf-8", errors="replace")
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            try:
                text = data.decode("cp1252")
            except UnicodeDecodeError:
                text = data.decode("latin-1")
            log.warning("%s is not UTF-8; read it as Windows-1252/Latin-1", where or "subtitle file")
    text = text.lstrip("\ufeff")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _seconds(h: str | None, m: str, s: str, frac: str | None) -> float:
    value = int(h or 0) * 3600 + int(m) * 60 + int(s)
    return value + (float("0." + frac) if frac else 0.0)


def clean_cue_text(lines: Iterable[str]) -> str:
    """Searchable text of a cue: styling tags, ASS overrides and entities removed, lines joined."""
    text = " ".join(lines)
    text = text.replace("\\N", " ").replace("\\n", " ").replace("\\h", " ")
    text = _ASS.sub("", text)
    text = _TAG.sub("", text)
    text = html.unescape(text).replace("\u00a0", " ")
    return " ".join(text.split())


def _parse(text: str, where: str) -> list[Cue]:
    """One state machine for SRT and WebVTT: a cue starts at a timing line and runs to a blank line.
    Everything outside cues (indices, the WEBVTT header, NOTE/STYLE/REGION blocks, cue identifiers)
    is ignored, which is also what makes the parser forgive missing blank lines and stray lines."""
    cues: list[Cue] = []
    cur: tuple[float, float, list[str]] | None = None

    def close() -> None:
        nonlocal cur
        if cur is not None:
            body = clean_cue_text(cur[2])
            if body:
                cues.append(Cue(cur[0], cur[1], body))
        cur = None

    for lineno, line in enumerate(text.split("\n"), 1):
        stripped = line.strip()
        if "-->" in stripped:
            if cur is not None and cur[2] and cur[2][-1].strip().isdigit():
                cur[2].pop()  # the next cue's number, with the blank line before it missing
            close()
            m = _TIMING.match(stripped)
            if not m:
                log.warning("%s:%d: unreadable cue timing %r; cue skipped", where, lineno, stripped[:80])
                continue
            g = m.groups()
            start, end = _seconds(*g[0:4]), _seconds(*g[4:8])
            if end < start:
                log.warning(
                    "%s:%d: cue ends (%.3f s) before it starts (%.3f s); cue skipped", where, lineno, end, start
                )
                continue
            cur = (start, end, [])
        elif not stripped:
            close()
        elif cur is not None:
            cur[2].append(stripped)
    close()
    cues.sort(key=lambda c: (c.start, c.end))
    return _merge_repeats(cues)


def _merge_repeats(cues: list[Cue]) -> list[Cue]:
    """Roll-up captions repeat a line in back-to-back cues; one cue per line keeps spans honest."""
    out: list[Cue] = []
    for c in cues:
        if out and out[-1].text == c.text and c.start - out[-1].end <= 0.1:
            out[-1] = Cue(out[-1].start, max(out[-1].end, c.end), c.text)
        else:
            out.append(c)
    return out


def parse_srt(text: str, where: str = "<srt>") -> list[Cue]:
    return _parse(text, where)


def parse_vtt(text: str, where: str = "<vtt>") -> list[Cue]:
    if not text.lstrip("\ufeff").lstrip().startswith("WEBVTT"):
        log.warning("%s: no WEBVTT header; parsed anyway", where)
    return _parse(text, where)


def _ffmpeg_failure(proc: subprocess.CompletedProcess) -> RuntimeError:
    return RuntimeError(failure_line(proc))


# an ASS drawing: from an override that turns drawing mode on ({\p1}) to one that turns it off, or the line's end
_ASS_DRAWING = re.compile(r"\{[^}]*\\p[1-9][^}]*\}.*?(?=\{[^}]*\\p0[^}]*\}|$)", re.MULTILINE)


def ffmpeg_srt(path: str | os.PathLike) -> str:
    """An ASS/SSA subtitle file as SRT text from ffmpeg. The file is decoded here (UTF-8, else
    Windows-1252: ffmpeg drops every line that is not UTF-8), drawings are removed (their coordinates
    are no words), and ffmpeg reads it as ASS from a pipe (never taken for a playlist or another format
    it would follow). RuntimeError with ffmpeg's last line where it cannot."""
    text = _ASS_DRAWING.sub("", decode_text(Path(path).read_bytes(), str(path)))
    proc = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "ass", "-i", "pipe:0", "-f", "srt", "pipe:1"],
                          input=text.encode("utf-8"), capture_output=True, timeout=FFMPEG_SUBTITLE_TIMEOUT)  # fmt: skip
    if proc.returncode != 0:
        raise _ffmpeg_failure(proc)
    return decode_text(proc.stdout, str(path))


def ffmpeg_tracks_srt(location: str | os.PathLike, streams: list[int], duration: float | None = None) -> list[str]:
    """Text subtitle tracks of a video (`-map 0:s:N` each) as SRT texts, in one pass over the file (a
    track's packets are spread through it: a pass per track read a film once per language). Times are
    the video's player time: ffmpeg counts from the file's first timestamp, as the probe does."""

    def run(charset: str | None) -> tuple[list[str], str]:
        with tempfile.TemporaryDirectory(prefix="vidsearch-subs-") as tmp:
            outs = [os.path.join(tmp, f"{n}.srt") for n in streams]
            cmd = ["ffmpeg", "-nostdin", "-v", "error", *(["-sub_charenc", charset] if charset else []), "-i", str(location)]
            for n, out in zip(streams, outs):
                cmd += ["-map", f"0:s:{n}", "-f", "srt", out]
            timeout = max(FFMPEG_SUBTITLE_TIMEOUT, (duration or 0) / 2)  # demuxing a long file off a slow disk
            proc = subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
            texts = [decode_text(Path(out).read_bytes(), str(location)) if os.path.exists(out) else "" for out in outs]
            if proc.returncode != 0 and not any(texts):
                raise _ffmpeg_failure(proc)
            return texts, proc.stderr.decode("utf-8", "replace")

    try:
        texts, log_text = run(None)
    except RuntimeError:  # a track that is not UTF-8 can fail whole ("Invalid data"): Windows-1252, or the first error
        return run("CP1252")[0]
    if "UTF-8" in log_text or "Invalid data" in log_text:  # ffmpeg dropped events that are not UTF-8: read again as Windows-1252
        try:
            again, _ = run("CP1252")
        except RuntimeError:
            return texts
        texts = [b if b.count("-->") > a.count("-->") else a for a, b in zip(texts, again)]  # per track, the one with more cues
    return texts


def parse_subtitles(path: str | os.PathLike) -> list[Cue]:
    """Cues of one .srt/.vtt file (by content when the extension lies), or of an .ass/.ssa file through
    ffmpeg; [] if it cannot be read."""
    path = Path(path)
    if path.suffix.lower() in CONVERTED_EXTENSIONS:
        try:
            return parse_srt(ffmpeg_srt(path), str(path))
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            log.warning("%s: cannot read subtitles: %s", path, exc)
            return []
    try:
        text = decode_text(path.read_bytes(), str(path))
    except OSError as exc:
        log.warning("%s: cannot read subtitles: %s", path, exc)
        return []
    if path.suffix.lower() == ".vtt" or text.lstrip().startswith("WEBVTT"):
        return parse_vtt(text, str(path))
    return parse_srt(text, str(path))


def read_subtitles(video: str | os.PathLike, roots: list[str] | None = None) -> list[SubtitleTrack]:
    return [SubtitleTrack(p, lang, tuple(parse_subtitles(p))) for p, lang in find_subtitles(video, roots)]


def _cue_spans(tracks: Iterable[Iterable[Cue]], duration: float | None) -> list[TextSpan]:
    """`subtitle` spans of several tracks' cues, each cue once (unique_subtitles), cut to `duration`."""
    spans = []
    for cues in tracks:
        for c in cues:
            start, end = c.start, c.end
            if duration is not None and duration > 0:
                if start >= duration:
                    continue
                end = min(end, duration)
            spans.append(TextSpan("subtitle", start, end, c.text))
    return unique_subtitles(spans)


def unique_subtitles(spans: Iterable[TextSpan]) -> list[TextSpan]:
    """Subtitle spans with each cue once (the same cue in `talk.srt`, `talk.vtt` and the file's own
    track: a sidecar is often extracted from it), in time order."""
    seen: set[tuple[float, float, str]] = set()
    out = []
    for sp in spans:
        key = (round(sp.start, 3), round(sp.end, 3), sp.text)
        if key not in seen:
            seen.add(key)
            out.append(sp)
    out.sort(key=lambda s: (s.start, s.end))
    return out


def subtitle_spans(video: str | os.PathLike, duration: float | None = None, roots: list[str] | None = None) -> list[TextSpan]:
    """`subtitle` spans from every track next to `video` (several languages all become searchable).
    A cue repeated in two files (`talk.srt` and `talk.vtt`) is kept once. With `duration`, cues past
    the end are dropped and cues running over it are clipped (subtitles made for another cut)."""
    return _cue_spans((track.cues for track in read_subtitles(video, roots)), duration)


def embedded_subtitle_spans(location: str | os.PathLike, streams: Iterable[int], duration: float | None = None) -> tuple[list[TextSpan], list[str]]:
    """`subtitle` spans from the video's own text subtitle tracks (ProbeResult.text_subtitles), plus a
    warning for each track ffmpeg could not read (the others and the video are kept)."""
    streams = list(streams)
    if not streams:
        return [], []
    try:
        texts = ffmpeg_tracks_srt(location, streams, duration)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        if len(streams) == 1:
            return [], [f"subtitle track {streams[0]}: {exc}"]
        texts, warnings = [], []  # one track ffmpeg cannot read must not cost the others: one pass each
        for n in streams:
            try:
                texts += ffmpeg_tracks_srt(location, [n], duration)
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as one:
                warnings.append(f"subtitle track {n}: {one}")
        return _cue_spans((parse_srt(t, f"{location} (subtitle track)") for t in texts), duration), warnings
    tracks = [parse_srt(t, f"{location} (subtitle track {n})") for n, t in zip(streams, texts)]
    return _cue_spans(tracks, duration), []


def closed_caption_spans(location: str | os.PathLike, stream_index: int, duration: float | None = None) -> tuple[list[TextSpan], list[str]]:
    """`subtitle` spans from the closed captions inside a video stream's pictures (ProbeResult.
    closed_captions: CEA-608/708 in the user data of an MPEG-2/H.264/HEVC stream, as broadcast TV and
    DVR recordings carry them), plus a warning where ffmpeg could not read them.

    The captions ride in the pictures, so ffmpeg decodes the whole stream to get them (its `movie`
    source with a `subcc` output; ~10% of real time for 1080p H.264 on two cores): only files whose
    probe saw captions pay for it. The file is passed as an inherited descriptor, so no name needs
    escaping for the filter graph. Live TV captions roll up: each cue repeats the lines above it, which
    are dropped (`_rolled_up`). A URL (object storage) is not read."""
    if is_url(str(location)):
        return [], []
    try:
        fd = os.open(location, os.O_RDONLY)
    except OSError as exc:
        return [], [f"closed captions: {exc.strerror or exc}"]
    try:
        graph = f"movie=/proc/self/fd/{fd}:s={int(stream_index)}:dec_threads=0[out0+subcc]"
        cmd = ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", graph, "-map", "0:1", "-f", "srt", "pipe:1"]
        timeout = max(FFMPEG_SUBTITLE_TIMEOUT, duration or 0)  # a whole decode: faster than real time
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL, pass_fds=(fd,))
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [], [f"closed captions: {exc}"]
    finally:
        os.close(fd)
    text = decode_text(proc.stdout, str(location)) if proc.stdout else ""
    if proc.returncode != 0 and not text:
        return [], [f"closed captions: {failure_line(proc)}"]
    return _cue_spans([parse_srt(_rolled_up(text), f"{location} (closed captions)")], duration), []


def _rolled_up(srt: str) -> str:
    """Roll-up captions with each line once: live TV shows two or three rows that scroll a line at a
    time, so each cue (ffmpeg writes one per change) begins with the lines the one before it ended
    with; those lines are dropped (compared without styling tags)."""
    out, before = [], []
    for block in re.split(r"\n\s*\n", srt.replace("\r\n", "\n")):
        lines = block.strip("\n").split("\n")
        timing = next((i for i, line in enumerate(lines) if "-->" in line), None)
        if timing is None:
            continue
        text = [_ASS.sub("", _TAG.sub("", line)).strip() for line in lines[timing + 1 :]]
        keep = text
        for n in range(min(len(before), len(text) - 1), 0, -1):
            if text[:n] == before[-n:]:
                keep = text[n:]
                break
        before = text
        out.append("\n".join([*lines[: timing + 1], *keep]))
    return "\n\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------- metadata

_FIELDS = {
    "title": ("title", "name"),
    "description": ("description", "summary", "caption", "synopsis"),
    "tags": ("tags", "keywords", "categories"),
}


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [t.strip() for t in re.split(r"[,;\n]", value) if t.strip()]
    if isinstance(value, Mapping):
        return [str(k).strip() for k in value if str(k).strip()]
    if isinstance(value, Iterable):
        return [str(v).strip() for v in value if v is not None and str(v).strip()]
    return [str(value).strip()] if str(value).strip() else []


def _chunks(text: str, max_words: int) -> list[str]:
    """Sentence-aligned pieces of at most ~max_words: the sentence encoder reads 256 word pieces
    (~180 words) and silently drops the rest of a long description otherwise."""
    sentences = re.split(r"(?<=[.!?])\s+", " ".join(text.split()))
    out: list[str] = []
    cur: list[str] = []
    for s in sentences:
        words = s.split()
        while len(words) > max_words:  # one enormous "sentence"
            if cur:
                out.append(" ".join(cur))
                cur = []
            out.append(" ".join(words[:max_words]))
            words = words[max_words:]
        if cur and len(cur) + len(words) > max_words:
            out.append(" ".join(cur))
            cur = []
        cur.extend(words)
    if cur:
        out.append(" ".join(cur))
    return out


def metadata_spans(
    title: str | None, metadata: Mapping[str, Any] | None, duration: float | None, max_words: int = 120
) -> list[TextSpan]:
    """`metadata` spans from a manifest entry: the title, the description (in sentence-aligned pieces)
    and the tags (one span), each covering the whole video. Other manifest keys (ids, URLs, dates)
    are not text anyone searches by, so they are left out."""
    metadata = metadata if isinstance(metadata, Mapping) else {}
    end = float(duration) if duration and duration > 0 else 0.0

    def first(keys: tuple[str, ...]) -> Any:
        for k in keys:
            if metadata.get(k) not in (None, "", [], {}):
                return metadata[k]
        return None

    spans: list[TextSpan] = []
    t = title if title not in (None, "") else first(_FIELDS["title"])
    if t is not None and str(t).strip():
        spans.append(TextSpan("metadata", 0.0, end, " ".join(str(t).split())))
    desc = first(_FIELDS["description"])
    if desc is not None:
        text = desc if isinstance(desc, str) else " ".join(_as_list(desc))
        spans += [TextSpan("metadata", 0.0, end, piece) for piece in _chunks(text, max_words)]
    tags = _as_list(first(_FIELDS["tags"]))
    if tags:
        spans.append(TextSpan("metadata", 0.0, end, ", ".join(dict.fromkeys(tags))))
    return spans


def sidecar_spans(
    video: str | os.PathLike,
    title: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    duration: float | None = None,
    roots: list[str] | None = None,
) -> list[TextSpan]:
    """Every span a video gets without looking at its pixels or sound (`roots`: find_subtitles)."""
    return metadata_spans(title, metadata, duration) + subtitle_spans(video, duration, roots)
