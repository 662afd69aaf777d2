"""Subtitle files reach their video the way players find them, and a file's words are not lost to
how it was written (media probe p22: M4, M5, M6 and the `Subs/` folder gap).

- Names that differ only in Unicode normalisation pair: macOS writes `café` decomposed (NFD), Linux
  and Windows composed (NFC), and a library copied between them holds both.
- A cue whose dialogue holds `-->` is text (ffmpeg keeps it); a broken timing line still skips its cue.
- UTF-16 without a byte-order mark is read; a file that is not empty but gives no cue says so.
- The release layout's `Subs/` folder beside the video is read: `Subs/<video stem>/` for that video,
  `Subs/` itself when its folder holds one video only, within a server job's library roots."""

from __future__ import annotations

import logging
import os
import time
import unicodedata
from pathlib import Path

from media import make_clip
from vidsearch.config import Settings
from vidsearch.indexer.pipeline import IndexRun, open_store_for
from vidsearch.indexer.sidecar import decode_text, find_subtitles, parse_srt, parse_subtitles, subtitle_spans


def nfc(s: str) -> str:
    return unicodedata.normalize("NFC", s)


def nfd(s: str) -> str:
    return unicodedata.normalize("NFD", s)


def cue(text: str, start: int = 1) -> str:
    return f"1\n00:00:{start:02d},000 --> 00:00:{start + 1:02d},000\n{text}\n\n"


def touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text(cue(name))


# ---------------------------------------------------------------------------------- M4: normalisation


def test_names_that_differ_only_in_unicode_normalisation_pair(tmp_path):
    """`café.mp4` (NFC) + `café.srt` (NFD, written on a Mac), and the other way round; the exact name
    wins where both forms exist, and letter case may differ too."""
    touch(tmp_path / "a", nfc("café.mp4"), nfd("café.srt"), nfd("CAFÉ.en.srt"))
    assert nfc("café.mp4") != nfd("café.mp4")  # the test means something only if the forms differ
    a = tmp_path / "a"
    assert find_subtitles(a / nfc("café.mp4")) == [(a / nfd("café.srt"), None), (a / nfd("CAFÉ.en.srt"), "en")]
    touch(tmp_path / "b", nfd("naïve.mp4"), nfc("naïve.srt"))
    b = tmp_path / "b"
    assert find_subtitles(b / nfd("naïve.mp4")) == [(b / nfc("naïve.srt"), None)]
    assert [s.text for s in subtitle_spans(b / nfd("naïve.mp4"))] == [nfc("naïve.srt")]
    touch(tmp_path / "c", nfc("café.mp4"), nfc("café.srt"), nfd("café.srt"))
    c = tmp_path / "c"
    assert find_subtitles(c / nfc("café.mp4")) == [(c / nfc("café.srt"), None)]  # exact wins
    assert find_subtitles(c / nfd("café.mp4")) == [(c / nfd("café.srt"), None)]


def test_a_subtitle_another_video_names_in_its_own_form_stays_that_videos(tmp_path):
    """A Linux folder can hold `café.mp4` in both forms: each keeps the subtitle spelled as it is."""
    touch(tmp_path, nfc("café.mp4"), nfd("café.mp4"), nfd("café.srt"))
    assert find_subtitles(tmp_path / nfc("café.mp4")) == []
    assert find_subtitles(tmp_path / nfd("café.mp4")) == [(tmp_path / nfd("café.srt"), None)]


# ---------------------------------------------------------------------------------- M5: arrows in text


def test_a_cue_whose_dialogue_holds_an_arrow_keeps_its_text(caplog):
    srt = cue("first line mango") + "2\n00:00:03,000 --> 00:00:04,000\nturn left --> then hedgehog\n-->\n\n"
    with caplog.at_level(logging.WARNING):
        cues = parse_srt(srt, "arrow.srt")
    assert [(c.start, c.end, c.text) for c in cues] == [
        (1.0, 2.0, "first line mango"), (3.0, 4.0, "turn left --> then hedgehog -->")
    ]  # fmt: skip
    assert "unreadable" not in caplog.text


def test_a_broken_timing_line_still_skips_its_cue(caplog):
    """After a blank line, or after the next cue's number where the blank line is missing, a line of
    digits up to the arrow is a timing that cannot be read: its cue is skipped with a warning."""
    srt = (
        cue("kept one")
        + "2\n00:00:0x,000 --> 00:00:05,000\nafter a blank line\n\n"
        + "3\n00:00:06,000 --> 00:00:07,000\nkept two\n4\n00:00:08;000 --> 00:00:09,000\nafter a number\n\n"
        + "5\n00:00:10,000 --> 00:00:11,000\nkept three\n00:00:12 --> 13\nno number\n"
    )
    with caplog.at_level(logging.WARNING):
        cues = parse_srt(srt, "broken.srt")
    assert [c.text for c in cues] == ["kept one", "kept two", "kept three"]
    assert caplog.text.count("unreadable cue timing") == 3


# ---------------------------------------------------------------------------------- M6: UTF-16, no BOM


def test_utf16_without_a_byte_order_mark_is_read(tmp_path):
    text = cue("cauliflower hurricane") + cue("\u00e7a va, \u0436\u0443\u043a \u65e5\u672c", 3)
    for codec in ("utf-16-le", "utf-16-be"):
        assert decode_text(text.encode(codec), "t.srt") == text
        p = tmp_path / f"{codec}.srt"
        p.write_bytes(text.encode(codec))
        assert [c.text for c in parse_subtitles(p)] == ["cauliflower hurricane", "\u00e7a va, \u0436\u0443\u043a \u65e5\u672c"]
    assert decode_text("caf\u00e9\n".encode("utf-8")) == "caf\u00e9\n"  # UTF-8 stays UTF-8


def test_a_subtitle_file_that_gives_no_cue_says_so(tmp_path, caplog):
    junk = tmp_path / "junk.srt"
    junk.write_bytes(b"this is not a subtitle file\x00\x00\x01 at all\n")
    empty = tmp_path / "empty.srt"
    empty.write_bytes(b"\n\n")
    with caplog.at_level(logging.WARNING):
        assert parse_subtitles(junk) == [] and parse_subtitles(empty) == []
    assert str(junk) in caplog.text and str(empty) not in caplog.text


# ---------------------------------------------------------------------------------- Subs/ folders


def test_subs_folder_beside_a_single_video_is_read(tmp_path):
    release = tmp_path / "Release.2019"
    touch(release, "Release.2019.mkv", "Release.2019.nfo")
    touch(release / "Subs", "English.srt", "2_English.srt", "3_French.vtt", "notes.txt")
    got = find_subtitles(release / "Release.2019.mkv")
    assert sorted(p.name for p, _ in got) == ["2_English.srt", "3_French.vtt", "English.srt"]
    assert all(lang for _, lang in got)  # a label from the name (English, French): not a plain sidecar
    for i, name in enumerate(("subs", "Subtitles", "SUBS")):
        other = tmp_path / f"case{i}"
        touch(other, "film.mp4")
        touch(other / name, "English.srt")
        assert [p for p, _ in find_subtitles(other / "film.mp4")] == [other / name / "English.srt"]


def test_subs_folder_beside_several_videos_goes_by_name(tmp_path):
    """A season pack: `Subs/<video stem>/` holds each episode's files; a file directly in `Subs/` is an
    episode's only where its name says which (otherwise it is anyone's guess, and left)."""
    season = tmp_path / "Show.S01"
    touch(season, "Show.S01E01.mkv", "Show.S01E02.mkv")
    touch(season / "Subs", "English.srt", "Show.S01E02.en.srt")
    touch(season / "Subs" / "Show.S01E01", "2_English.srt", "3_Spanish.srt")
    touch(season / "Subs" / "Show.S01E02.extra", "2_English.srt")  # another name: nobody's
    e1, e2 = find_subtitles(season / "Show.S01E01.mkv"), find_subtitles(season / "Show.S01E02.mkv")
    assert sorted(p.relative_to(season).as_posix() for p, _ in e1) == [
        "Subs/Show.S01E01/2_English.srt", "Subs/Show.S01E01/3_Spanish.srt"
    ]  # fmt: skip
    assert e2 == [(season / "Subs" / "Show.S01E02.en.srt", "en")]
    touch(season / "subs" / nfd("Épisode"), "English.srt")  # a folder named in the other form and case
    touch(season, nfc("épisode.mp4"))
    assert [p.name for p, _ in find_subtitles(season / nfc("épisode.mp4"))] == ["English.srt"]


def test_beside_the_video_comes_first_and_hidden_files_are_no_videos(tmp_path):
    """A folder copied from a Mac holds `._GX010001.MP4` (AppleDouble): the release still has one video.
    A video with a name discovery does not know is alone in its folder too."""
    gopro = tmp_path / "card"
    touch(gopro, "GX010001.MP4", "._GX010001.MP4", "GX010001.srt")
    touch(gopro / "Subs", "English.srt")
    got = find_subtitles(gopro / "GX010001.MP4")
    assert got == [(gopro / "GX010001.srt", None), (gopro / "Subs" / "English.srt", "English")]
    sniffed = tmp_path / "dvr"  # a recording discovery knows by its first bytes, not its name
    touch(sniffed, "news.rec")
    touch(sniffed / "Subs", "English.srt")
    assert [p.name for p, _ in find_subtitles(sniffed / "news.rec")] == ["English.srt"]


def test_a_subs_folder_out_of_a_servers_roots_is_not_read(tmp_path):
    """A `Subs` link leading out of the library roots must not make another folder's text searchable."""
    lib, outside = tmp_path / "lib", tmp_path / "private"
    touch(outside, "secret.srt")
    touch(outside / "film", "secret.srt")
    touch(lib / "one", "film.mp4")
    (lib / "one" / "Subs").symlink_to(outside)
    video = lib / "one" / "film.mp4"
    assert sorted(p.name for p, _ in find_subtitles(video)) == ["secret.srt", "secret.srt"]  # the CLI follows it
    assert find_subtitles(video, roots=[str(lib)]) == []


def test_a_release_with_subs_folders_is_indexed_and_read_again_when_they_change(tmp_path, tiny_backbone):
    """End to end: the `Subs/` files become subtitle spans, and one edited or added later is read on
    the next run (IndexRun._sync_subtitles goes by find_subtitles and the files' times)."""
    lib = tmp_path / "lib"
    movie, season = lib / "Movie.2019", lib / "Show.S01"
    movie.mkdir(parents=True)
    season.mkdir()
    make_clip(movie / "Movie.2019.mp4", seconds=3, size="96x64", rate=5, source="testsrc", audio_hz=None)
    make_clip(season / "Show.S01E01.mp4", seconds=3, size="96x64", rate=5, source="smptebars", audio_hz=None)
    make_clip(season / "Show.S01E02.mp4", seconds=3, size="96x64", rate=5, source="rgbtestsrc", audio_hz=None)
    (movie / "Subs").mkdir()
    (movie / "Subs" / "2_English.srt").write_text(cue("the lighthouse keeper"))
    (season / "Subs" / "Show.S01E01").mkdir(parents=True)
    (season / "Subs" / "Show.S01E01" / "2_English.srt").write_text(cue("a walrus on the pier"))
    (season / "Subs" / "English.srt").write_text(cue("ambiguous: two episodes here"))
    settings = Settings(db=tmp_path / "db", model="tiny", pretrained="none", speech=False, ocr=False)
    store = open_store_for(settings, tiny_backbone)
    summary = IndexRun(store, tiny_backbone, settings).run([lib])
    assert summary.indexed == 3 and summary.failed == 0

    def texts() -> dict[str, list[str]]:
        files = store.files()
        ids = {Path(p).name: v for p, v in zip(files["path"].to_pylist(), files["video_id"].to_pylist())}
        return {name: sorted(r["text"] for r in store.span_rows(v, "subtitle")) for name, v in ids.items()}

    assert texts() == {"Movie.2019.mp4": ["the lighthouse keeper"], "Show.S01E01.mp4": ["a walrus on the pier"], "Show.S01E02.mp4": []}
    later = time.time() + 5  # newer than the files' records, whatever the clock's granularity
    (movie / "Subs" / "2_English.srt").write_text(cue("the lighthouse keeper's daughter"))
    (season / "Subs" / "Show.S01E02").mkdir()
    (season / "Subs" / "Show.S01E02" / "3_French.srt").write_text(cue("le phare"))
    for p in (movie / "Subs" / "2_English.srt", season / "Subs" / "Show.S01E02" / "3_French.srt"):
        os.utime(p, (later, later))
    summary = IndexRun(open_store_for(settings, tiny_backbone), tiny_backbone, settings).run([lib])
    assert summary.indexed == 0 and summary.failed == 0
    assert texts() == {"Movie.2019.mp4": ["the lighthouse keeper's daughter"], "Show.S01E01.mp4": ["a walrus on the pier"],
                       "Show.S01E02.mp4": ["le phare"]}  # fmt: skip
