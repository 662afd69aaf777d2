"""Subtitles inside the video and in ASS/SSA files are searchable words, like .srt/.vtt beside it:
an MKV's SubRip and ASS tracks, an MP4's mov_text, a `.ass` sidecar (a probe found them all ignored).
Bitmap tracks hold no text and are left alone; a cue in both the file's own track and a sidecar
extracted from it is one span, and re-reading a changed sidecar keeps the file's own tracks."""

from __future__ import annotations

import subprocess
from pathlib import Path

from media import make_clip
from vidsearch.config import Settings
from vidsearch.indexer.pipeline import IndexRun, open_store_for
from vidsearch.indexer.probe import probe
from vidsearch.indexer.sidecar import embedded_subtitle_spans, parse_subtitles

ASS = """[Script Info]
ScriptType: v4.00+
PlayResX: 384
PlayResY: 288

[V4+ Styles]
Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding
Style: Default,Arial,16,&Hffffff,&Hffffff,&H0,&H0,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,0

[Events]
Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text
Dialogue: 0,0:00:01.00,0:00:02.50,Default,,0,0,0,,{\\an8}{\\i1}the {\\b1}tangerine{\\b0} orchard, at dawn{\\i0}\\Nsecond line
Comment: 0,0:00:00.00,0:00:03.00,Default,,0,0,0,,a comment is no subtitle
"""
SRT = "1\n00:00:00,500 --> 00:00:01,500\nthe marmalade factory\n\n2\n00:00:02,000 --> 00:00:03,000\nclosing time\n"


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def with_tracks(out: Path, video: Path, subs: list[tuple[Path, str]], codec: str) -> Path:
    """`video` with each subtitle file muxed in as a track (`codec`: srt/ass for MKV, mov_text for MP4)."""
    inputs = [a for sub, _ in subs for a in ("-i", str(sub))]
    maps = ["-map", "0:v"] + [a for i in range(len(subs)) for a in ("-map", f"{i + 1}:s")]
    langs = [a for i, (_, lang) in enumerate(subs) for a in (f"-metadata:s:s:{i}", f"language={lang}")]
    ffmpeg("-i", str(video), *inputs, *maps, "-c:v", "copy", "-c:s", codec, *langs, str(out))
    return out


def test_ass_files_and_embedded_tracks_are_read(tmp_path):
    ass, srt = tmp_path / "t.ass", tmp_path / "t.srt"
    ass.write_text(ASS)
    srt.write_text(SRT)
    cues = parse_subtitles(ass)
    assert [(c.start, c.end) for c in cues] == [(1.0, 2.5)]
    assert "tangerine orchard, at dawn" in cues[0].text and "second line" in cues[0].text and "\\" not in cues[0].text and "{" not in cues[0].text
    plain = make_clip(tmp_path / "plain.mp4", seconds=3, size="96x64", rate=5, audio_hz=None)
    mkv = with_tracks(tmp_path / "film.mkv", plain, [(srt, "eng"), (ass, "fra")], "copy")
    mp4 = with_tracks(tmp_path / "phone.mp4", plain, [(srt, "eng")], "mov_text")
    for video, expected in ((mkv, {"the marmalade factory", "closing time", "tangerine orchard"}), (mp4, {"the marmalade factory", "closing time"})):
        info = probe(video)
        spans, problems = embedded_subtitle_spans(video, info.text_subtitles, info.duration)
        assert not problems
        texts = " | ".join(sp.text for sp in spans)
        assert all(e in texts for e in expected), texts
        assert all(sp.source == "subtitle" for sp in spans)
        marm = next(sp for sp in spans if sp.text == "the marmalade factory")
        assert abs(marm.start - 0.5) < 0.01 and abs(marm.end - 1.5) < 0.01


def test_a_library_with_tracks_inside_and_ass_beside_gets_their_subtitle_spans(tmp_path, tiny_backbone):
    lib = tmp_path / "lib"
    lib.mkdir()
    srt, ass = tmp_path / "t.srt", tmp_path / "t.ass"
    srt.write_text(SRT)
    ass.write_text(ASS)
    plain = make_clip(tmp_path / "plain.mp4", seconds=3, size="96x64", rate=5, source="smptebars", audio_hz=None)
    with_tracks(lib / "film.mkv", plain, [(srt, "eng")], "copy")
    make_clip(lib / "anime.mp4", seconds=3, size="96x64", rate=5, source="testsrc", audio_hz=None)
    (lib / "anime.ass").write_text(ASS)
    (lib / "film.srt").write_text(SRT)  # a sidecar extracted from the film's own track: the same cues
    settings = Settings(db=tmp_path / "db", model="tiny", pretrained="none", speech=False, ocr=False)
    store = open_store_for(settings, tiny_backbone)
    summary = IndexRun(store, tiny_backbone, settings).run([lib])
    assert summary.indexed == 2 and summary.failed == 0
    by_name = {Path(p).name: v for p, v in zip(store.files()["path"].to_pylist(), store.files()["video_id"].to_pylist())}
    film = sorted(r["text"] for r in store.span_rows(by_name["film.mkv"], "subtitle"))
    assert film == ["closing time", "the marmalade factory"], film  # once each: track and sidecar agree
    anime = [r["text"] for r in store.span_rows(by_name["anime.mp4"], "subtitle")]
    assert len(anime) == 1 and "tangerine orchard" in anime[0]
    # a sidecar edited later is read again; the film's own track stays
    (lib / "film.srt").write_text("1\n00:00:00,000 --> 00:00:00,400\nthe overture\n")
    IndexRun(open_store_for(settings, tiny_backbone), tiny_backbone, settings).run([lib])
    film = sorted(r["text"] for r in store.span_rows(by_name["film.mkv"], "subtitle"))
    assert film == ["closing time", "the marmalade factory", "the overture"], film


def test_a_subtitle_link_out_of_a_servers_roots_is_not_read(tmp_path):
    """A server job holds what it reads to its library roots: `talk.srt` linking to a file elsewhere on
    the server's disk would make that file's text searchable (the CLI, with no roots, follows it)."""
    from vidsearch.indexer.sidecar import find_subtitles

    lib, outside = tmp_path / "lib", tmp_path / "private"
    lib.mkdir()
    outside.mkdir()
    (outside / "secret.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nthe vault code is 1234\n")
    (lib / "talk.srt").symlink_to(outside / "secret.srt")
    (lib / "talk.en.srt").write_text(SRT)
    video = lib / "talk.mp4"
    assert [p.name for p, _ in find_subtitles(video)] == ["talk.srt", "talk.en.srt"]
    assert [p.name for p, _ in find_subtitles(video, roots=[str(lib)])] == ["talk.en.srt"]


def test_windows_1252_subtitles_and_ass_drawings(tmp_path):
    """Accented Windows-1252 text is kept in ASS files and in a file's own tracks (ffmpeg drops every
    line that is not UTF-8), and an ASS drawing's coordinates are no words."""
    ass = tmp_path / "t.ass"
    events = ASS.index("Dialogue:")
    line = "Dialogue: 0,0:00:01.00,0:00:02.00,Default,,0,0,0,,{\\p1}m 0 0 l 100 0 100 100 0 100{\\p0}caf\u00e9 cr\u00e8me\\hbr\u00fbl\u00e9e\n"
    ass.write_bytes((ASS[:events] + line).encode("cp1252"))
    cues = parse_subtitles(ass)
    assert [c.text for c in cues] == ["caf\u00e9 cr\u00e8me br\u00fbl\u00e9e"], cues
    srt = tmp_path / "cp.srt"
    srt.write_bytes("1\n00:00:00,500 --> 00:00:01,500\nla cr\u00e8me de la cr\u00e8me\n".encode("cp1252"))
    plain = make_clip(tmp_path / "plain.mp4", seconds=2, size="96x64", rate=5, audio_hz=None)
    mkv = with_tracks(tmp_path / "film.mkv", plain, [(srt, "fre")], "copy")  # the track keeps the Windows-1252 bytes
    info = probe(mkv)
    spans, problems = embedded_subtitle_spans(mkv, info.text_subtitles, info.duration)
    assert [sp.text for sp in spans] == ["la cr\u00e8me de la cr\u00e8me"], (spans, problems)


def test_closed_captions_in_the_pictures_pop_on_and_roll_up(tmp_path):
    """A TV recording's CEA-608 captions: found by the probe, read with their times; live TV's roll-up
    captions repeat the line above in every cue, which is kept once. A clip without them pays nothing."""
    from media import make_captioned_clip
    from vidsearch.indexer.sidecar import closed_caption_spans

    pop = make_captioned_clip(tmp_path / "pop.ts", [(1.0, "THE NARWHAL SINGS"), (3.0, "SECOND CAPTION")])
    roll = make_captioned_clip(tmp_path / "roll.ts", [(0.5, "FIRST LINE OF TALK"), (2.0, "SECOND LINE HERE"), (3.5, "THIRD LINE")],
                               roll_up=True)  # fmt: skip
    plain = make_clip(tmp_path / "plain.mp4", seconds=2, size="96x64", rate=5, audio_hz=None)
    assert not probe(plain).closed_captions
    info = probe(pop)
    assert info.closed_captions and info.text_subtitles == ()
    spans, problems = closed_caption_spans(pop, info.stream_index, info.duration)
    spans_pop = spans
    assert not problems and [sp.text for sp in spans] == ["THE NARWHAL SINGS", "SECOND CAPTION"]
    assert 1.0 <= spans[0].start <= 1.6 and 3.0 <= spans[1].start <= 3.6 and all(sp.source == "subtitle" for sp in spans)
    spans, _ = closed_caption_spans(roll, probe(roll).stream_index, 6.0)
    assert [sp.text for sp in spans][:2] == ["FIRST LINE OF TALK", "SECOND LINE HERE"]  # not "FIRST LINE OF TALK SECOND ..."
    # the whole decode reports how far it has read (the decoder's stall watchdog killed a long recording)
    seen: list[float] = []
    assert closed_caption_spans(pop, -1, info.duration, on_progress=seen.append)[0] == spans_pop
    assert seen and seen == sorted(seen) and seen[-1] >= 0.9 * info.duration, seen
