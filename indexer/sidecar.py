"""Text that arrives next to a video: subtitle files and the manifest's title, description and tags.

Both are free, exact and human-written, so they are the cheapest text channels to index: subtitles
place each line in time without running ASR, and metadata answers queries about what a video is
(`source="metadata"` spans cover the whole video, 0 to duration).

Subtitles are found by name, the way players find them: for `talk.mp4`, `talk.srt`, `talk.vtt`,
`talk.ass`, `talk.en.srt`, `talk.pt-BR.forced.vtt`, letter case and Unicode normalisation aside
(`Talk.srt`; a `café.srt` named on a Mac, decomposed). A name that belongs to another video in the
folder (`talk.part2.srt` when `talk.part2.mp4` exists) is left to that video. A release's `Subs/`
folder beside the video is read as VLC and Plex read it: `Subs/<video stem>/*.srt` (season packs),
and `Subs/English.srt`, `Subs/2_English.srt` where the folder holds that one video. Subtitles can
also travel inside the video (an MKV's SubRip or ASS track, an MP4's mov_text): every text track is
read (`embedded_subtitle_spans`), and so are the closed captions a TV recording carries in its
pictures (`closed_caption_spans`). SRT and WebVTT are parsed here; ASS/SSA files and embedded tracks are
converted to SRT by ffmpeg first (it already reads every format; styling and positioning are not
words). A `.sub` file is MicroDVD (`{start frame}{end frame}text`, timed by the frame rate its first
line names, else the video's); a DVD's VobSub `.sub`/`.idx` pair, like every bitmap track (Blu-ray
PGS, DVD, DVB), holds pictures of text, not text: it is not read, with a warning naming it. Warnings
raised while a video's files are read are also kept with the video (`kept_warnings`), so `status`
and a run's summary list them, not only the log.

Subtitle files from the wild are messy: BOMs (UTF-8 and UTF-16), UTF-16 without one, CRLF or bare CR,
Latin-1 text, missing blank lines, cue numbers out of order, broken timing lines, dialogue holding
`-->`, HTML/ASS styling tags. The parser takes what it can: a cue it cannot read is skipped with a
warning naming the file and line, and a file that gives no cue at all is a warning naming it; it never
raises on content.
"""

from __future__ import annotations

import contextlib
import html
import logging
import os
import re
import subprocess
import tempfile
import threading
import time
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from vidsearch.encoders.sentence import TextSpan

from .discover import DESCRIPTION_KEYS, TAG_KEYS, VIDEO_EXTENSIONS
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
    "kept_warnings",
    "metadata_spans",
    "parse_microdvd",
    "parse_srt",
    "parse_subtitles",
    "parse_vtt",
    "read_subtitles",
    "sidecar_spans",
    "subtitle_spans",
    "unique_subtitles",
]

SUBTITLE_EXTENSIONS = (".srt", ".vtt", ".ass", ".ssa", ".sub")
MICRODVD_FPS = 25.0  # a MicroDVD file's frame rate when neither it nor the video names one
_MICRODVD = re.compile(r"^\{(\d+)\}\{(\d*)\}(.*)$")
_MICRODVD_CODE = re.compile(r"\{[a-zA-Z]:[^}]*\}")  # {y:i}, {c:$0000ff}, {f:Arial}: styling, not words
_MPEG_PS = b"\x00\x00\x01\xba"  # a VobSub .sub (pictures of text in an MPEG program stream)
CONVERTED_EXTENSIONS = (".ass", ".ssa")  # read through ffmpeg's SRT output (ffmpeg_srt)
FFMPEG_SUBTITLE_TIMEOUT = 600  # seconds: an embedded track is read by demuxing the whole file
_TIME = r"(?:(\d+):)?(\d{1,2}):(\d{1,2})(?:[,.](\d{1,3}))?"
_TIMING = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}(?:\s|$)")
_TIMING_LIKE = re.compile(r"^\s*\d[\d:.,;\s]*-->")  # a timing line, readable or not; dialogue seldom starts with digits and an arrow
_TAG = re.compile(r"<[^<>\n]*>")  # <i>, </b>, <font ...>, <v Bob>, <c.yellow>, <00:00:01.000>
_ASS = re.compile(r"\{\\[^}]*\}")  # {\an8}, {\i1}: ASS overrides that survive conversion to SRT
_LANG_PART = re.compile(r"^[A-Za-z0-9_-]{1,12}$")
SUBTITLE_FOLDERS = ("subs", "subtitles")  # case-folded names of a release's subtitle folder beside the video
_NUMBERED = re.compile(r"^\d+_")  # `2_English.srt`: the track number a release's extractor writes first


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


@dataclass(frozen=True)
class _Folder:
    """What finding subtitles needs of one folder."""

    videos: frozenset[str]  # video stems, as they are
    folded: frozenset[str]  # the same, as names compare (_folded)
    video_names: frozenset[str]  # video files (`film.mp4` and `film.mkv` are two), hidden ones (macOS `._film.mp4`) aside
    subtitles: tuple[tuple[str, str, str], ...]  # (name, stem, stem as names compare) of each subtitle file
    folders: tuple[str, ...]  # its folders' names (`Subs`, `Subs/<video stem>`)


def _folder(folder: Path) -> _Folder | None:
    """A folder as finding subtitles sees it (None where it cannot be read), listed once per change."""
    try:
        return _folder_subtitles(str(folder), folder.stat().st_mtime_ns)
    except OSError:
        return None


@lru_cache(maxsize=64)
def _folder_subtitles(folder: str, mtime_ns: int) -> _Folder:
    """A folder's videos, subtitle files and folders, once per change: every video of a folder of
    thousands asks (each run looks for subtitles added beside unchanged videos)."""
    names, folders = _listing(folder, mtime_ns)
    videos = [n for n in names if Path(n).suffix.lower() in VIDEO_EXTENSIONS]
    stems = frozenset(Path(n).stem for n in videos)
    subtitles = tuple((n, Path(n).stem, _folded(Path(n).stem)) for n in names if Path(n).suffix.lower() in SUBTITLE_EXTENSIONS)
    shown = frozenset(n for n in videos if not n.startswith("."))
    return _Folder(stems, frozenset(_folded(v) for v in stems), shown, subtitles, folders)


@lru_cache(maxsize=64)
def _listing(folder: str, mtime_ns: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A folder's file names and folder names, listed once per change: a library folder holding
    thousands of videos is scanned once, not once per video."""
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        log.warning("cannot list %s for subtitle files: %s", folder, exc.strerror or exc)
        return (), ()
    names, folders = [], []
    for e in entries:
        try:
            if e.is_file():
                names.append(e.name)
            elif e.is_dir():
                folders.append(e.name)
        except OSError:  # a symbolic link loop (`self.mp4 -> self.mp4`) costs that name, not the folder's subtitles
            continue
    return tuple(sorted(names)), tuple(sorted(folders))


def _nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def _folded(name: str) -> str:
    """A name as names are compared when not exactly: letter case aside (a Windows or macOS library
    holds `Holiday.mp4` + `holiday.srt`) and Unicode normalisation aside (macOS writes `café`
    decomposed, NFD; Linux and Windows composed, NFC; a library copied between them holds both, and
    players on macOS pair them)."""
    return _nfc(unicodedata.normalize("NFD", name).casefold())


def _names_video(base: str, stem: str, exact: bool) -> str | None:
    """What follows `stem` in a subtitle's base name: "" for `talk`, "en" for `talk.en`; None when the
    base does not start with the stem. Exactly when `exact`; otherwise as _folded compares (the names'
    composed forms are cut, so a decomposed letter counts as one, as the stem's does)."""
    if not exact:
        base, stem = _nfc(base), _nfc(stem)
    head = base[: len(stem)]
    if not (head == stem if exact else _folded(head) == _folded(stem)):
        return None
    if len(base) == len(stem):
        return ""
    return base[len(stem) + 1 :] if base[len(stem)] == "." else None


def _claimed_exactly(base: str, videos: frozenset[str], stem: str) -> bool:
    """Whether another video of the folder names this subtitle exactly (`holiday.srt` and
    `holiday.en.srt` are `holiday.mp4`'s, not `Holiday.mp4`'s): its base, or a part of it up to a dot,
    is that video's stem. A set lookup per dot, not a scan of the folder's videos."""
    cuts = [i for i, ch in enumerate(base) if ch == "."] + [len(base)]
    return any(base[:i] in videos and base[:i] != stem for i in cuts)


def _named_for(folder: Path, listing: _Folder, stem: str, here: _Folder) -> list[tuple[Path, str | None]]:
    """The subtitle files of `folder` (`listing`) whose names name the video `stem` of the folder
    `here` (the video's: the same one, or the one holding `Subs/`), language tag or None.

    An exact name wins over one that differs only in case or normalisation for the same language and
    format (`Holiday.srt` over `holiday.srt`), and a name that another video of `here` matches exactly
    (`holiday.srt` beside `holiday.mp4`) is that video's."""
    exact_found: list[tuple[Path, str | None]] = []
    loose_found: list[tuple[Path, str | None]] = []
    folded_stem = _folded(stem)
    for name, base, folded in listing.subtitles:  # base: "talk" or "talk.en" or "talk.en.forced"
        middle = _names_video(base, stem, exact=True)
        exact = middle is not None
        if not exact:
            if not folded.startswith(folded_stem):  # cannot name it even loosely: a cheap test (a folder of thousands asks it millions of times)
                continue
            middle = _names_video(base, stem, exact=False)
            if middle is None or _claimed_exactly(base, here.videos, stem):
                continue
        if middle:
            parts = middle.split(".")
            if len(parts) > 2 or not all(_LANG_PART.match(x) for x in parts):
                continue
            if _folded(base) in here.folded:  # `talk.part2.srt` is `talk.part2.mp4`'s
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
    return found


def _label(base: str, stem: str) -> str | None:
    """The language of a file in a `Subs/` folder, from its name: `2_English` -> "English" (release
    tools number the tracks they extract), `Movie.en` -> "en" for the video `Movie`; the name itself
    otherwise. None only for the video's own name, which is its plain subtitle."""
    middle = _names_video(base, stem, exact=False)
    if middle is not None:
        return middle or None
    return _NUMBERED.sub("", base) or base


def _folder_named(folders: tuple[str, ...], stem: str, here: _Folder) -> list[str]:
    """The folders of a `Subs/` folder named for the video `stem` (a season pack's
    `Subs/<episode>/`): the exactly named one, else those named so but for case or normalisation that
    no other video of `here` names exactly."""
    exact = [f for f in folders if f == stem]
    if exact:
        return exact
    return [f for f in folders if _folded(f) == _folded(stem) and f not in here.videos]


def _in_subs_folders(video: Path, here: _Folder) -> list[tuple[Path, str | None]]:
    """Subtitle files of the `Subs/` folders beside the video (any case: `Subs`, `subs`, `Subtitles`),
    the usual release layout, read by VLC and Plex: every file of `Subs/<video stem>/` (a season
    pack's), the files of `Subs/` whose names name the video, and, where the folder holds this video
    alone, every other file of `Subs/` (`Subs/English.srt`, `Subs/2_English.srt`). Beside several
    videos, a file of `Subs/` that names none of them could be any one's: it is left. (Alone: no other
    video file in the folder; the video itself may be one discovery sniffed, `film.rec`.)"""
    folder, stem = video.parent, video.stem
    found: list[tuple[Path, str | None]] = []
    for name in here.folders:
        if name.casefold() not in SUBTITLE_FOLDERS:
            continue
        alone = here.video_names <= {video.name}  # (no copy of a folder of thousands per video, and only here)
        subs = folder / name
        listing = _folder(subs)
        if listing is None:
            continue
        named = _named_for(subs, listing, stem, here)
        if alone:
            taken = {p.name for p, _ in named}
            named += [(subs / n, _label(b, stem)) for n, b, _ in listing.subtitles if n not in taken]
        found += sorted(named)
        for own in _folder_named(listing.folders, stem, here):
            files = _folder(subs / own)
            if files is not None:
                found += [(subs / own / n, _label(b, stem)) for n, b, _ in files.subtitles]
    return found


def find_subtitles(video: str | os.PathLike, roots: list[str] | None = None) -> list[tuple[Path, str | None]]:
    """(path, language tag or None) for each subtitle file that belongs to this video: those beside it
    that name it, plain name first, then those of a `Subs/` folder beside it (_in_subs_folders).

    Names are matched as players match them, letter case and Unicode normalisation aside: `holiday.srt`
    is `Holiday.mp4`'s, and a `café.srt` written on a Mac is `café.mp4`'s (_folded). An exact name
    wins over one that differs only so for the same language and format (`Holiday.srt` over
    `holiday.srt`), and a name that another video of the folder matches exactly (`holiday.srt` beside
    `holiday.mp4`) is that video's. `roots` (a server job's library roots): a subtitle file that
    resolves outside them (a link, or a link to the `Subs/` folder) is not read."""
    video = Path(video)
    folder = video.parent
    here = _folder(folder)
    if here is None:
        return []
    stem = video.stem
    found = _named_for(folder, here, stem, here)
    found.sort(key=lambda x: (x[1] is not None, x[1] or "", x[0].suffix.lower()))
    found += _in_subs_folders(video, here)
    if roots is not None:
        from .discover import outside_roots, resolved_roots

        allowed = resolved_roots(roots)
        found = [f for f in found if not outside_roots(f[0], allowed)]
    return found


# -------------------------------------------------------------------------------------------- reading


def decode_text(data: bytes, where: str = "") -> str:
    """Text from a subtitle file's bytes: BOMs honoured, UTF-16 without one recognised (_utf16_order),
    UTF-8 assumed, Windows-1252 (the usual legacy encoding for subtitles) or Latin-1 as fallbacks;
    newlines normalised to \\n."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = data.decode("utf-16", errors="replace")
    elif data.startswith(b"\xef\xbb\xbf"):
        text = data[3:].decode("utf-8", errors="replace")
    elif (order := _utf16_order(data)) is not None:
        text = data.decode(order, errors="replace")
        log.info("%s has no byte-order mark; read it as %s", where or "subtitle file", order.upper())
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


def _utf16_order(data: bytes) -> str | None:
    """The codec ("utf-16-le" or "utf-16-be") where the bytes are UTF-16 without a byte-order mark
    (some Windows tools write it so), else None. Such bytes pass for UTF-8 with a NUL between the
    characters, and no line of them read as a cue: the file was dropped without a word. UTF-8 and
    legacy code pages hold no NUL; UTF-16 puts one beside every ASCII character (a subtitle's digits,
    arrows, newlines), always on the same side of the pair. So: NULs on one side in a quarter of the
    pairs or more, and few on the other (a CJK character's low byte can be 0)."""
    sample = data[:4096]
    pairs = len(sample) // 2
    if pairs < 2:
        return None
    even, odd = sample[0 : pairs * 2 : 2].count(0), sample[1 : pairs * 2 : 2].count(0)
    if max(even, odd) * 4 < pairs or min(even, odd) * 8 > max(even, odd):
        return None
    return "utf-16-le" if odd > even else "utf-16-be"


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
            m = _TIMING.match(stripped)
            if not m and cur is not None and not _starts_cue(stripped, cur[2]):
                cur[2].append(stripped)  # dialogue that holds an arrow ("turn left --> then"): text, as ffmpeg reads it
                continue
            if cur is not None and cur[2] and cur[2][-1].strip().isdigit():
                cur[2].pop()  # the next cue's number, with the blank line before it missing
            close()
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


def _starts_cue(line: str, text: list[str]) -> bool:
    """Whether a line holding `-->` that is no readable timing, met inside a cue, is the broken timing
    line of the next cue (its cue is skipped, with a warning) rather than the cue's dialogue: digits up
    to the arrow (`00:00:08;000 --> ...`), or right after a line that is the next cue's number where
    the blank line is missing."""
    return bool(_TIMING_LIKE.match(line)) or bool(text and text[-1].isdigit())


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
    """An ASS/SSA subtitle file as SRT text from ffmpeg (_ass_as_srt). RuntimeError with ffmpeg's last
    line where it cannot."""
    return _ass_as_srt(decode_text(Path(path).read_bytes(), str(path)), str(path))


def _ass_as_srt(text: str, where: str) -> str:
    """ASS/SSA text as SRT text from ffmpeg. The file is decoded before (decode_text: UTF-8, else
    Windows-1252; ffmpeg drops every line that is not UTF-8), drawings are removed (their coordinates
    are no words), and ffmpeg reads it as ASS from a pipe (never taken for a playlist or another format
    it would follow)."""
    text = _ASS_DRAWING.sub("", text)
    proc = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "ass", "-i", "pipe:0", "-f", "srt", "pipe:1"],
                          input=text.encode("utf-8"), capture_output=True, timeout=FFMPEG_SUBTITLE_TIMEOUT)  # fmt: skip
    if proc.returncode != 0:
        raise _ffmpeg_failure(proc)
    return decode_text(proc.stdout, where)


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


def parse_microdvd(text: str, where: str = "<sub>", fps: float | None = None) -> list[Cue]:
    """Cues of a MicroDVD file: `{start}{end}text` in frames, `|` between lines, `{y:i}`-style codes.
    A first cue whose text is a number (`{1}{1}23.976`) names the frame rate; else the video's
    (`fps`); else MICRODVD_FPS, with a warning (the times are then a guess)."""
    rows = [(int(m.group(1)), int(m.group(2) or m.group(1)), m.group(3)) for m in map(_MICRODVD.match, text.split("\n")) if m]
    rate = None
    if rows and rows[0][0] <= 1 and rows[0][0] == rows[0][1]:  # `{1}{1}23.976`: a cue shown for no frame
        with contextlib.suppress(ValueError):
            rate = float(rows[0][2].strip())
            rows = rows[1:]
    if rate is None or not 1.0 <= rate <= 300.0:
        rate = fps if fps and 1.0 <= fps <= 300.0 else None
    if rate is None:
        rate = MICRODVD_FPS
        if rows:
            log.warning("%s: MicroDVD names no frame rate and the video's is unknown; timed at %g frames/s", where, rate)
    cues = []
    for start, end, body in rows:
        words = clean_cue_text(_MICRODVD_CODE.sub("", line).lstrip("/") for line in body.split("|"))
        if words and end >= start:
            cues.append(Cue(start / rate, max(end, start + 1) / rate, words))
    return _merge_repeats(cues)


def parse_subtitles(path: str | os.PathLike, fps: float | None = None) -> list[Cue]:
    """Cues of one .srt/.vtt file (by content when the extension lies), of an .ass/.ssa file through
    ffmpeg, or of a MicroDVD .sub (timed with the video's `fps` unless it names its own); [] if it cannot
    be read. A file that holds text but gives no cue is a warning naming it, as every other subtitle
    file that cannot be read is: its words are missing from the index."""
    path = Path(path)
    try:
        data = path.read_bytes()
        if path.suffix.lower() == ".sub" and data.startswith(_MPEG_PS):
            log.warning("%s: VobSub subtitles are pictures of text; not read (an .srt beside the video is)", path)
            return []
        text = decode_text(data, str(path))
        if path.suffix.lower() in CONVERTED_EXTENSIONS:
            cues = parse_srt(_ass_as_srt(text, str(path)), str(path))
        elif path.suffix.lower() == ".vtt" or text.lstrip().startswith("WEBVTT"):
            cues = parse_vtt(text, str(path))
        elif path.suffix.lower() == ".sub" and _MICRODVD.match(text.lstrip().split("\n", 1)[0]):
            cues = parse_microdvd(text, str(path), fps)
        else:
            cues = parse_srt(text, str(path))
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        log.warning("%s: cannot read subtitles: %s", path, exc)
        return []
    if not cues and text.strip():
        log.warning("%s: no subtitle cue could be read from it", path)
    return cues


def read_subtitles(video: str | os.PathLike, roots: list[str] | None = None, fps: float | None = None) -> list[SubtitleTrack]:
    return [SubtitleTrack(p, lang, tuple(parse_subtitles(p, fps))) for p, lang in find_subtitles(video, roots)]


@contextlib.contextmanager
def kept_warnings(out: list[str]):
    """Within the block, the warnings this module logs from this thread are also appended to `out`:
    the indexer keeps them with the video (its `files` row, the run's summary, `status`), where a
    log line on stderr reached neither scripts (`--json`) nor a later look at the index. A filter, not
    a handler: the record still goes where it went (a handler here would have stood in for logging's
    last-resort one, so the line left stderr, and other threads' warnings went nowhere)."""
    me = threading.get_ident()

    def keep(record: logging.LogRecord) -> bool:
        if record.thread == me and record.levelno >= logging.WARNING:
            out.append(record.getMessage())
        return True

    log.addFilter(keep)
    try:
        yield out
    finally:
        log.removeFilter(keep)


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


def subtitle_spans(video: str | os.PathLike, duration: float | None = None, roots: list[str] | None = None, fps: float | None = None) -> list[TextSpan]:
    """`subtitle` spans from every track next to `video` (several languages all become searchable).
    A cue repeated in two files (`talk.srt` and `talk.vtt`) is kept once. With `duration`, cues past
    the end are dropped and cues running over it are clipped (subtitles made for another cut)."""
    return _cue_spans((track.cues for track in read_subtitles(video, roots, fps)), duration)


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


def closed_caption_spans(location: str | os.PathLike, stream_index: int, duration: float | None = None,
                         on_progress: Callable[[float], None] | None = None) -> tuple[list[TextSpan], list[str]]:  # fmt: skip
    """`subtitle` spans from the closed captions inside a video stream's pictures (ProbeResult.
    closed_captions: CEA-608/708 in the user data of an MPEG-2/H.264/HEVC stream, as broadcast TV and
    DVR recordings carry them), plus a warning where ffmpeg could not read them (all, or the rest
    after a failure).

    The captions ride in the pictures, so ffmpeg decodes the whole stream to get them (its `movie`
    source with a `subcc` output; ~10% of real time for 1080p H.264 on two cores): only files whose
    probe saw captions pay for it. Its progress (`-progress`, the pictures' time through a null
    output) goes to `on_progress` in seconds, so the decoder's stall watchdog sees an hour-long
    recording being read, not a stuck decoder. The file is passed as an inherited descriptor
    (`/proc/self/fd`, Linux), so no name needs escaping for the filter graph. Live TV captions roll
    up: each cue repeats the lines above it, which are dropped (`_rolled_up`). A URL (object storage)
    is not read."""
    if is_url(str(location)):
        return [], []
    try:
        fd = os.open(location, os.O_RDONLY)
    except OSError as exc:
        return [], [f"closed captions: {exc.strerror or exc}"]
    try:
        text, failure = _caption_srt(fd, stream_index, duration, on_progress)
    finally:
        os.close(fd)
    if failure is not None and not text:
        return [], [f"closed captions: {failure}"]
    warnings = [f"closed captions: read up to where ffmpeg stopped ({failure})"] if failure is not None else []
    return _cue_spans([parse_srt(_rolled_up(text), f"{location} (closed captions)")], duration), warnings


def _caption_srt(fd: int, stream_index: int, duration: float | None, on_progress: Callable[[float], None] | None) -> tuple[str, str | None]:
    """The captions of the video stream `stream_index` (-1: the best one) of the file open as `fd`, as
    SRT text, and why ffmpeg failed (None: it did not)."""
    stream = str(int(stream_index)) if stream_index >= 0 else "dv"
    graph = f"movie=/proc/self/fd/{fd}:s={stream}:dec_threads=0[out0+subcc]"
    timeout = max(FFMPEG_SUBTITLE_TIMEOUT, duration or 0)  # a whole decode: faster than real time
    with tempfile.TemporaryDirectory(prefix="vidsearch-cc-") as tmp:
        out, log_path = os.path.join(tmp, "cc.srt"), os.path.join(tmp, "ffmpeg.log")
        cmd = ["ffmpeg", "-nostdin", "-v", "error", "-nostats", "-progress", "pipe:1", "-f", "lavfi", "-i", graph,
               "-map", "0:1", "-f", "srt", out, "-map", "0:0", "-c:v", "wrapped_avframe", "-f", "null", "-"]  # fmt: skip
        with open(log_path, "w+b") as log_file:
            try:
                proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log_file, stdin=subprocess.DEVNULL, pass_fds=(fd,))
            except OSError as exc:
                return "", str(exc)
            deadline = time.monotonic() + timeout
            with proc:
                for line in proc.stdout:  # a block of `key=value` lines every half second
                    if line.startswith(b"out_time_us=") and on_progress is not None:
                        with contextlib.suppress(ValueError):
                            on_progress(max(0, int(line.split(b"=", 1)[1])) / 1e6)
                    if time.monotonic() > deadline:
                        proc.kill()
                        return "", f"ffmpeg gave no answer within {timeout:.0f} s"
                proc.wait()
            log_file.seek(0)
            failure = None if proc.returncode == 0 else failure_line(subprocess.CompletedProcess(cmd, proc.returncode, b"", log_file.read()))
        text = decode_text(Path(out).read_bytes(), "closed captions") if os.path.exists(out) else ""
    return text, failure


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
    "description": DESCRIPTION_KEYS,
    "tags": TAG_KEYS,
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
    fps: float | None = None,
) -> list[TextSpan]:
    """Every span a video gets without looking at its pixels or sound (`roots`: find_subtitles; `fps`:
    the video's, which times a MicroDVD file that names none)."""
    return metadata_spans(title, metadata, duration) + subtitle_spans(video, duration, roots, fps)
