"""A media zoo: the layouts real video libraries hold, rendered with ffmpeg, and what each must give.

Every clip shows a red first half and a blue second half (a cut at `cut` seconds in player time), so a
test can check that frames were decoded as people see them and timed as a player shows them: the
indexer's first shot boundary must land on the cut, whatever the codec, container, rotation or
timestamp offset. Files are small (160x120 or so, 2-4 s) to keep the session fixture fast.

`build_zoo(root)` returns a `Zoo` ({name: ZooFile}); `expect` says what `vidsearch index` must record:
- "indexed": a video row, no warning;
- "warning": a video row and a warning containing `words`;
- "failed": a failed `files` row whose error contains `words`;
- "absent": not listed at all (not a video candidate: hidden, companion or audio files).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from media import _cea608_codes, _odd_parity, ffmpeg, make_captioned_clip


@dataclass
class ZooFile:
    path: Path
    expect: str  # indexed | warning | failed | absent
    words: str = ""  # for warning/failed: part of the message
    cut: float | None = None  # player time of the red -> blue cut, where the clip has one
    duration: float | None = None
    size: tuple[int, int] | None = None  # displayed (width, height)
    has_audio: bool | None = None
    key: str | None = None  # path as listed in the index when it differs from `path`
    extra: dict = field(default_factory=dict)


def _red_blue(seconds: float, size: str, rate: int, extra_filter: str = "") -> list[str]:
    half = seconds / 2
    chain = f"[0:v][1:v]concat=n=2:v=1:a=0{',' + extra_filter if extra_filter else ''}[v]"
    return [
        "-f", "lavfi", "-i", f"color=c=red:size={size}:rate={rate}:duration={half}",
        "-f", "lavfi", "-i", f"color=c=blue:size={size}:rate={rate}:duration={half}",
        "-filter_complex", chain,
    ]  # fmt: skip


def _render(
    path: Path,
    vcodec: list[str],
    acodec: list[str] | None = None,
    seconds: float = 4.0,
    size: str = "160x120",
    rate: int = 10,
    audio: str = "sine=frequency=440",
    extra_filter: str = "",
    out_args: tuple[str, ...] = (),
    n_audio: int = 1,
) -> Path:
    args = _red_blue(seconds, size, rate, extra_filter)
    maps = ["-map", "[v]"]
    if acodec is not None:
        for i in range(n_audio):
            freq = audio if i == 0 else "sine=frequency=880"
            args += ["-f", "lavfi", "-i", f"{freq}:duration={seconds}"]
            maps += ["-map", f"{2 + i}:a"]
    ffmpeg(*args, *maps, *vcodec, *(acodec or []), *out_args, "-t", str(seconds), str(path))
    return path


H264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
AAC = ["-c:a", "aac"]


@dataclass
class Zoo:
    library: Path
    outside: Path  # where links that leave the library point
    files: dict[str, ZooFile]


def build_zoo(root: Path) -> Zoo:
    """Render the zoo under `root/library` (plus `root/outside` for links that leave it)."""
    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its banner at info level
    lib = root / "library"
    outside = root / "outside"
    lib.mkdir(parents=True)
    outside.mkdir()
    (lib / "sub").mkdir()
    z: dict[str, ZooFile] = {}

    def ok(name, path, **kw):
        kw.setdefault("cut", 2.0)
        kw.setdefault("duration", 4.0)
        z[name] = ZooFile(path, "indexed", **kw)

    ok("h264_aac_mp4", _render(lib / "h264 aac.mp4", H264, AAC), size=(160, 120), has_audio=True)
    ok("hevc_mp4", _render(lib / "hevc.mp4", ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error",
                                              "-pix_fmt", "yuv420p", "-tag:v", "hvc1"], AAC), has_audio=True)
    ok("vp9_opus_webm", _render(lib / "vp9.webm", ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "200k"],
                                ["-c:a", "libopus"]), has_audio=True)
    ok("av1_mkv", _render(lib / "av1.mkv", ["-c:v", "libsvtav1", "-preset", "12", "-pix_fmt", "yuv420p"], ["-c:a", "libopus"],
                          size="192x128"), has_audio=True, size=(192, 128))
    ok("mpeg2_ts", _render(lib / "broadcast.ts", ["-c:v", "mpeg2video", "-q:v", "4"], ["-c:a", "mp2"]), has_audio=True)
    ok("prores_mov", _render(lib / "master.mov", ["-c:v", "prores_ks", "-profile:v", "0"], ["-c:a", "pcm_s16le"]), has_audio=True)
    ok("mjpeg_mov", _render(lib / "camera.MOV", ["-c:v", "mjpeg", "-q:v", "5", "-pix_fmt", "yuvj420p"], ["-c:a", "pcm_s16le"]), has_audio=True)
    ok("mpeg4_avi", _render(lib / "old.avi", ["-c:v", "mpeg4", "-q:v", "5"], ["-c:a", "libmp3lame"]), has_audio=True)
    ok("flv", _render(lib / "stream.flv", ["-c:v", "flv", "-q:v", "5"], ["-c:a", "libmp3lame", "-ar", "44100"]), has_audio=True)
    ok("wmv", _render(lib / "windows.wmv", ["-c:v", "wmv2", "-q:v", "5"], ["-c:a", "wmav2"]), has_audio=True)
    ok("theora_ogv", _render(lib / "free.ogv", ["-c:v", "libtheora", "-q:v", "5"], ["-c:a", "libvorbis"]), has_audio=True)
    ok("mkv_two_audio", _render(lib / "dub.mkv", H264, AAC, n_audio=2), has_audio=True)
    ok("ac3_51", _render(lib / "surround.mp4", H264, ["-c:a", "ac3", "-ac", "6"]), has_audio=True)
    ok("audio_8khz", _render(lib / "phone call.mp4", H264, ["-c:a", "aac", "-ar", "8000", "-ac", "1"]), has_audio=True)
    ok("odd_444", _render(lib / "odd 444.mp4", ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv444p"], None,
                          extra_filter="format=yuv444p,scale=161:121"), size=(161, 121), has_audio=False)
    ok("ten_bit", _render(lib / "ten bit.mkv", ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error",
                                                "-pix_fmt", "yuv420p10le"], None), has_audio=False)
    ok("interlaced", _render(lib / "interlaced.mkv", ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
                                                      "-flags", "+ilme+ildct", "-x264opts", "interlaced=1"], AAC,
                             size="160x120", rate=25, extra_filter="tinterlace=interleave_top,fieldorder=tff"), has_audio=True)
    # A phone held upright: coded 160x120 landscape with a display matrix turning it to 120x160. The
    # clip is red on the coded top half and blue on the bottom, so upright frames are red on one side.
    phone = lib / "phone portrait.mp4"
    tmp = root / "phone_coded.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", "color=c=red:size=160x60:rate=10:duration=3",
        "-f", "lavfi", "-i", "color=c=blue:size=160x60:rate=10:duration=3",
        "-f", "lavfi", "-i", "sine=frequency=500:duration=3",
        "-filter_complex", "[0:v][1:v]vstack[v]", "-map", "[v]", "-map", "2:a", *H264, *AAC, str(tmp),
    )  # fmt: skip
    ffmpeg("-i", str(tmp), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(phone))
    tmp.unlink()
    z["rotated_phone"] = ZooFile(phone, "indexed", duration=3.0, size=(120, 160), has_audio=True,
                                 extra={"rotation": 90})  # fmt: skip
    # A transport stream whose timestamps start 10 s in (as recorded broadcasts do): times must still
    # be player times, so the cut lands at 2.0 s, not at 12.0 s.
    ok("ts_offset", _render(lib / "recording.ts", ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"], AAC,
                            out_args=("-output_ts_offset", "10")), has_audio=True)
    # MP4 and Matroska whose timestamps start 10 hours in (`-output_ts_offset`; MKV remuxed from a
    # recorded broadcast): their header duration is where the timeline ends (36004 s), not the length.
    for name, fname in [("mkv_start_offset", "ten hours in.mkv"), ("mp4_start_offset", "ten hours in.mp4")]:
        ok(name, _render(lib / fname, H264, None, out_args=("-output_ts_offset", "36000")), has_audio=False)
    # Trimmed with `ffmpeg -ss 2 -c copy` from a clip red for 3 s then blue (one key frame every 3 s):
    # the packets from the key frame before 2 s are kept and hidden by an MP4 edit list, or carry
    # negative timestamps in Matroska. A player shows red for 1 s, then blue, 4 s in all.
    gop = _render(root / "gop.mp4", [*H264, "-g", "30"], None, seconds=6.0)
    trimmed = [("edit_list_trim_mp4", "trimmed copy.mp4", ()), ("negative_start_mkv", "trimmed copy.mkv", ("-avoid_negative_ts", "disabled"))]
    for name, fname, opts in trimmed:
        ffmpeg("-ss", "2", "-i", str(gop), "-c", "copy", *opts, str(lib / fname))
        ok(name, lib / fname, cut=1.0, duration=4.0, has_audio=False)
    # QuickTime Animation with alpha (motion-graphics exports): one key frame, then frames that repaint
    # only what changed, so a decoder that seeks must start from the key frame.
    ok("qtrle_alpha_mov", _render(lib / "animation alpha.mov", ["-c:v", "qtrle", "-pix_fmt", "argb"], None), has_audio=False)
    # A 4000x16 strip (a ticker): indexed whole, and OCR on it costs what a normal frame costs.
    ok("wide_strip", _render(lib / "ticker strip.mp4", H264, None, seconds=2.0, size="4000x16"), cut=1.0, duration=2.0,
       size=(4000, 16), has_audio=False)  # fmt: skip
    # An MKV whose first video stream is an unflagged one-frame MJPEG cover: the real video is described.
    cover = root / "cover.png"
    ffmpeg("-f", "lavfi", "-i", "color=c=green:size=300x300", "-frames:v", "1", str(cover))
    base = _render(root / "cover base.mp4", H264, AAC)
    ffmpeg("-i", str(cover), "-i", str(base), "-map", "0", "-map", "1", "-c", "copy", "-c:v:0", "mjpeg",
           "-disposition:v:0", "attached_pic", str(lib / "cover first.mkv"))  # fmt: skip
    ok("cover_first_mkv", lib / "cover first.mkv", size=(160, 120), has_audio=True)
    # Camcorder and set-top-box names: an HDV tape capture (.m2t, MPEG-2 in TS), a DVB recording under a
    # name no list knows (.rec: sniffed), and a PAL MiniDV capture (.dv: 720x576 with 16:15 pixels, shown 768x576).
    ok("hdv_m2t", _render(lib / "hdv tape.m2t", ["-c:v", "mpeg2video", "-q:v", "4", "-f", "mpegts"], ["-c:a", "mp2"]), has_audio=True)
    ok("dvb_rec", _render(lib / "topfield.rec", [*H264, "-f", "mpegts"], AAC, audio="sine=frequency=700"), has_audio=True)
    ok("minidv", _render(lib / "minidv capture.dv", ["-c:v", "dvvideo", "-pix_fmt", "yuv420p", "-f", "dv"], ["-c:a", "pcm_s16le", "-ar", "48000", "-ac", "2"],
                         size="720x576", rate=25), size=(768, 576), has_audio=True)  # fmt: skip
    # Anamorphic: 160x120 coded with 2:1 pixels, shown 320x120.
    ok("anamorphic", _render(lib / "anamorphic.mp4", H264, None, out_args=("-aspect", "8:3")), size=(320, 120), has_audio=False)
    # Two video tracks (a dashcam's two cameras): the default first track is red then blue; the second,
    # bigger and at a higher bitrate, is green. The first is described and decoded: the cut is there.
    ffmpeg(*_red_blue(4.0, "160x120", 10), "-f", "lavfi", "-i", "color=green:size=640x480:rate=10:duration=4",
           "-map", "[v]", "-map", "2:v", *H264, "-t", "4", str(lib / "two cameras.mp4"))  # fmt: skip
    ok("two_video_tracks", lib / "two cameras.mp4", size=(160, 120), has_audio=False)
    # A subtitle whose name differs from its video's only in letter case (a library from Windows or macOS)
    _render(lib / "Holiday.mp4", H264, None, extra_filter="hue=h=10")
    (lib / "holiday.srt").write_text("1\n00:00:01,000 --> 00:00:02,000\ncase mismatch narwhal\n")
    ok("case_subtitle", lib / "Holiday.mp4", has_audio=False, extra={"subtitle": "case mismatch narwhal"})
    # A TV recording whose pictures carry closed captions (CEA-608 in A/53 user data), and a QuickTime
    # movie with a closed-caption track (c608, from a Scenarist file)
    make_captioned_clip(lib / "evening news.ts", [(1.0, "THE NARWHAL SINGS TONIGHT")], seconds=4.0)
    ok("captions_in_pictures", lib / "evening news.ts", cut=None, has_audio=False, extra={"subtitle": "THE NARWHAL SINGS TONIGHT"})
    scc = root / "captions.scc"
    words = " ".join(f"{_odd_parity(a):02x}{_odd_parity(b):02x}" for a, b in _cea608_codes("WALRUS ON THE ICE", roll_up=False))
    scc.write_text(f"Scenarist_SCC V1.0\n\n00:00:01:00\t{words}\n\n00:00:03:00\t942c 942c\n")
    ffmpeg(*_red_blue(4.0, "160x120", 10), "-i", str(scc), "-map", "[v]", "-map", "2:s", *H264, "-c:s", "copy", "-t", "4",
           str(lib / "caption track.mov"))  # fmt: skip
    ok("caption_track_mov", lib / "caption track.mov", has_audio=False, extra={"subtitle": "WALRUS ON THE ICE"})
    ok("tiny_clip", _render(lib / "blink.mp4", H264, None, seconds=0.2, rate=25), cut=None, duration=0.2, has_audio=False)
    gif = lib / "reaction.gif"
    ffmpeg(*_red_blue(4.0, "160x120", 5), "-map", "[v]", "-t", "4", str(gif))
    ok("animated_gif", gif, has_audio=False)
    noext = lib / "VID_0001"
    ffmpeg(*_red_blue(4.0, "160x120", 10), "-map", "[v]", *H264, "-f", "mp4", "-t", "4", str(noext))
    ok("no_extension", noext, has_audio=False)
    for i, (name, fname) in enumerate([("quotes", "it's \"quoted\".mp4"), ("brackets", "[2024] (final) {v2}.mp4"),
                                       ("dash", "-starts-with-dash.mp4"), ("non_ascii", "sub/café – 日本語 ñ.mp4")]):  # fmt: skip
        ok(name, _render(lib / fname, H264, AAC, audio=f"sine=frequency={600 + 50 * i}"), has_audio=True)
    # macOS AppleDouble companions and other hidden files are not videos
    (lib / "._h264 aac.mp4").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 200)
    z["appledouble"] = ZooFile(lib / "._h264 aac.mp4", "absent")
    (lib / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + b"\x00" * 100)
    z["ds_store"] = ZooFile(lib / ".DS_Store", "absent")
    # audio-only files: not video candidates by extension; an audio-only .mp4 fails with its reason
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:duration=2", "-c:a", "libmp3lame", str(lib / "podcast.mp3"))
    z["mp3"] = ZooFile(lib / "podcast.mp3", "absent")
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:duration=2", "-c:a", "aac", str(lib / "voice memo.m4a"))
    z["m4a"] = ZooFile(lib / "voice memo.m4a", "absent")
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:duration=2", "-c:a", "aac", str(lib / "audio only.mp4"))
    z["audio_only_mp4"] = ZooFile(lib / "audio only.mp4", "failed", "no video stream (audio-only")
    # an MP4 whose video track got no frame (ffmpeg stopped at once): ffmpeg writes no track at all
    ffmpeg("-f", "lavfi", "-i", "color=c=green:size=160x120:rate=25", "-f", "lavfi", "-i", "sine=duration=1", "-frames:v", "0",
           "-map", "0:v", "-map", "1:a", *H264, *AAC, str(lib / "no frames.mp4"))  # fmt: skip
    z["no_streams_mp4"] = ZooFile(lib / "no frames.mp4", "failed", "holds no streams")
    (lib / "empty.mp4").write_bytes(b"")
    z["empty"] = ZooFile(lib / "empty.mp4", "failed", "empty file")
    (lib / "page.mp4").write_text("<!DOCTYPE html><html><body>404 Not Found</body></html>\n")
    z["html_as_mp4"] = ZooFile(lib / "page.mp4", "failed", "not a readable video")
    # A playlist saved as .mp4 would make ffprobe open files outside the library: rejected unread.
    secret = outside / "secret.mp4"
    _render(secret, H264, None)
    (lib / "playlist.mp4").write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4,\n{secret}\n#EXT-X-ENDLIST\n")
    z["hls_as_mp4"] = ZooFile(lib / "playlist.mp4", "failed", "playlist")
    (lib / "concat.mp4").write_text(f"ffconcat version 1.0\nfile '{secret}'\n")
    z["ffconcat_as_mp4"] = ZooFile(lib / "concat.mp4", "failed", "playlist")
    # Damaged files: the index of a truncated mp4 is at the end (moov lost) -> unreadable; with the
    # index at the front (faststart) the first part decodes -> indexed with a warning; bytes destroyed
    # in the middle cost that stretch only.
    full = _render(root / "full.mp4", ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "10"], AAC,
                   seconds=10.0, size="320x240", rate=25, out_args=("-movflags", "+faststart"))  # fmt: skip
    tail_moov = _render(root / "tail_moov.mp4", H264, AAC, seconds=10.0, size="320x240", rate=25)
    data = tail_moov.read_bytes()
    (lib / "cut short.mp4").write_bytes(data[: len(data) // 2])
    z["truncated_no_moov"] = ZooFile(lib / "cut short.mp4", "failed", "not a readable video")
    data = full.read_bytes()
    (lib / "truncated with index.mp4").write_bytes(data[: int(len(data) * 0.4)])
    z["truncated_with_moov"] = ZooFile(lib / "truncated with index.mp4", "warning", "could be decoded", cut=None,
                                       duration=10.0)  # fmt: skip
    # a Matroska file cut short keeps the length its header says; decord indexes only the frames there
    mkv = _render(root / "full.mkv", H264, AAC, seconds=10.0, size="320x240", rate=25)
    data_mkv = mkv.read_bytes()
    (lib / "truncated download.mkv").write_bytes(data_mkv[: int(len(data_mkv) * 0.4)])
    z["truncated_mkv"] = ZooFile(lib / "truncated download.mkv", "warning", "could be decoded", cut=None, duration=10.0)
    import random

    rnd = random.Random(7)
    buf = bytearray(data)
    a, b = int(len(buf) * 0.45), int(len(buf) * 0.55)
    buf[a:b] = bytes(rnd.randrange(256) for _ in range(b - a))
    (lib / "corrupted middle.mp4").write_bytes(bytes(buf))
    z["corrupt_middle"] = ZooFile(lib / "corrupted middle.mp4", "warning", "could not be decoded", cut=5.0, duration=10.0)
    # Symlinks: one to a file inside the library (indexed under its own name, same content as its
    # target), one leading out of the library (not followed by default), a broken one, and a loop.
    os.symlink(lib / "h264 aac.mp4", lib / "sub" / "alias.mp4")
    z["symlink_inside"] = ZooFile(lib / "sub" / "alias.mp4", "indexed", cut=2.0, duration=4.0, has_audio=True)
    external = _render(outside / "elsewhere.mp4", H264, AAC)
    os.symlink(external, lib / "linked out.mp4")
    z["symlink_outside"] = ZooFile(lib / "linked out.mp4", "failed", "outside the library")
    os.symlink(outside / "missing.mp4", lib / "dangling.mp4")
    z["symlink_broken"] = ZooFile(lib / "dangling.mp4", "failed", "broken symbolic link")
    os.symlink(lib, lib / "sub" / "loop")  # a directory link back up the tree: the walk must end
    z["symlink_loop"] = ZooFile(lib / "sub" / "loop", "absent")
    os.mkfifo(lib / "named pipe.mp4")
    z["fifo"] = ZooFile(lib / "named pipe.mp4", "failed", "not a regular file")
    # a link inside the library to a file that fails: the failure is listed under the link's own name
    os.symlink(lib / "cut short.mp4", lib / "sub" / "alias of broken.mp4")
    z["symlink_to_failed"] = ZooFile(lib / "sub" / "alias of broken.mp4", "failed", "which failed: not a readable video")
    return Zoo(lib, outside, z)


def ffprobe_rotation(path: Path) -> str:
    return subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream_side_data=rotation", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
