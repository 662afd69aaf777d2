"""Real-world layouts the p21 media probe found mishandled, each made small with ffmpeg and checked
where the indexer decides: camcorder/DVB/DV files found by name or by their first bytes, a file with
two video tracks decoded from the track it is described by, anamorphic video at its display aspect,
the audio track flagged default, subtitles whose name differs only in case, and manifests that are
not regular files or that name videos outside a server's library roots."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from media import ffmpeg
from vidsearch.indexer.decode import decode_frames, plan_samples, read_audio
from vidsearch.indexer.discover import discover, read_manifest
from vidsearch.indexer.probe import probe
from vidsearch.indexer.sidecar import find_subtitles

H264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
RED_BLUE = ["-f", "lavfi", "-i", "color=red:s=160x120:r=10:d=2", "-f", "lavfi", "-i", "color=blue:s=160x120:r=10:d=2"]
CONCAT = ["-filter_complex", "[0:v][1:v]concat=n=2:v=1[v]", "-map", "[v]"]


def _keys(sources) -> set[str]:
    return {Path(s.key).name for s in sources}


# ----------------------------------------------------------------------------------------- P1


def test_camcorder_dvb_and_dv_files_are_found_by_name_or_by_their_first_bytes(tmp_path):
    """HDV tapes (.m2t), DVB recordings (.trp/.tp), JVC .tod and MiniDV captures (.dv) are videos; a
    transport stream or DV file under a name no list knows (.rec, .dif, .xyz) is found by sniffing.
    A text file that happens to start with 'G' (the TS sync byte) is not taken for one."""
    lib = tmp_path / "lib"
    lib.mkdir()
    ts = lib / "control.ts"
    ffmpeg(*RED_BLUE, *CONCAT, *H264, "-f", "mpegts", str(ts))
    for name in ("hdv tape.m2t", "dvb rec.trp", "rec.tp", "camcorder.tod", "topfield.rec", "unknown.xyz"):
        shutil.copy(ts, lib / name)
    dv = lib / "minidv capture.dv"
    ffmpeg("-f", "lavfi", "-i", "color=red:s=720x480:r=30000/1001:d=0.5", "-c:v", "dvvideo", "-pix_fmt", "yuv411p", "-f", "dv", str(dv))
    shutil.copy(dv, lib / "capture.dif")
    (lib / "Grocery list.log").write_text("Get milk\n" * 100)
    (lib / "GIF-ish.bin").write_bytes(b"G" + b"\x00" * 1000)  # one sync byte, no packet structure
    sources, problems = discover([lib])
    assert problems == []
    assert _keys(sources) == {"control.ts", "hdv tape.m2t", "dvb rec.trp", "rec.tp", "camcorder.tod", "topfield.rec",
                              "unknown.xyz", "minidv capture.dv", "capture.dif"}  # fmt: skip
    info = probe(dv)  # and it is readable: DV is 720x480 with 8:9 pixels (displayed 640x480 at 4:3... or 16:9)
    assert info.height == 480 and info.duration == pytest.approx(0.5, abs=0.1)


# ----------------------------------------------------------------------------------------- P2


def test_a_file_with_two_video_tracks_is_decoded_from_the_track_it_is_described_by(tmp_path):
    """Track 0 (default, 160x120) is red then blue; track 1 (640x480, higher bitrate) is green. decord
    picks its own "best" stream (the green one); every decoder must give what the probe describes."""
    path = tmp_path / "dual.mp4"
    ffmpeg(*RED_BLUE, "-f", "lavfi", "-i", "color=green:s=640x480:r=10:d=4", *CONCAT, "-map", "2:v", *H264, str(path))
    info = probe(path)
    assert (info.width, info.height, info.stream_index) == (160, 120, 0)
    chunk, _ = decode_frames(path, plan_samples(info.duration, 1.0), info, 64)
    mean = chunk.frames.reshape(len(chunk.frames), -1, 3).mean(axis=1)
    assert (mean[:, 1] < 60).all(), mean  # no green frame
    assert mean[0, 0] > 200 and mean[-1, 2] > 200, mean  # red first, blue last: the cut is there


# ----------------------------------------------------------------------------------------- P3


def test_display_size_applies_the_sample_aspect_ratio_then_the_rotation():
    from vidsearch.indexer.probe import display_size

    assert display_size(160, 120, "2:1", 0) == (320, 120)
    assert display_size(720, 480, "32:27", 0) == (853, 480)  # DVD 16:9
    assert display_size(720, 480, "8:9", 0) == (640, 480)  # DV 4:3
    assert display_size(160, 120, "2:1", 90) == (120, 320)  # anamorphic, then held upright
    for unknown in ("0:1", "1:1", None, "N/A", "bogus", "1:0"):
        assert display_size(160, 120, unknown, 0) == (160, 120)


@pytest.mark.parametrize(
    "name, args, displayed",
    [
        ("sar2.mp4", ["-f", "lavfi", "-i", "color=red:s=160x120:r=10:d=1", *H264, "-aspect", "8:3"], (320, 120)),  # decord
        ("dvd169.mpg", ["-f", "lavfi", "-i", "color=red:s=720x480:r=25:d=1", "-c:v", "mpeg2video", "-aspect", "16:9"], (853, 480)),  # PyAV
    ],
)
def test_anamorphic_video_is_stored_and_decoded_at_its_display_aspect(tmp_path, name, args, displayed):
    """Non-square pixels: the size stored is what a player shows, and frames come out at that aspect."""
    path = tmp_path / name
    ffmpeg(*args, str(path))
    info = probe(path)
    assert (info.width, info.height) == displayed
    chunk, _ = decode_frames(path, plan_samples(info.duration, 1.0), info, 64, crop=False)
    h, w = chunk.frames.shape[1:3]
    assert h == 64 and w == pytest.approx(64 * displayed[0] / displayed[1], abs=1), (w, h)


# ----------------------------------------------------------------------------------------- P4


def _dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples[: rate]))
    return float(np.fft.rfftfreq(min(len(samples), rate), 1 / rate)[int(np.argmax(spectrum))])


def test_audio_and_speech_come_from_the_track_flagged_default(tmp_path, monkeypatch):
    """a:0 (300 Hz, not default) and a:1 (1000 Hz, default, English): players play a:1, so the probe,
    the audio decode and the speech reader all take a:1."""
    from vidsearch.indexer import prepare as prep

    path = tmp_path / "two tracks.mkv"
    ffmpeg(*RED_BLUE, "-f", "lavfi", "-i", "sine=frequency=300:d=4", "-f", "lavfi", "-i", "sine=frequency=1000:d=4", *CONCAT,
           "-map", "2:a", "-map", "3:a", *H264, "-c:a", "aac", "-disposition:a:0", "0", "-disposition:a:1", "default",
           "-metadata:s:a:1", "language=eng", str(path))  # fmt: skip
    info = probe(path)
    assert info.audio_stream == 1
    assert _dominant_hz(read_audio(path, stream=info.audio_stream), 16000) == pytest.approx(1000, abs=20)
    heard = []

    class Listener:  # a recogniser that notes what it hears
        def transcribe(self, blocks):
            heard.append(_dominant_hz(np.concatenate(list(blocks)), prep.SAMPLE_RATE))
            return type("Result", (), {"spans": []})()

    monkeypatch.setattr(prep, "get_recognizer", lambda *a, **k: Listener())
    result = prep.prepare(prep.DecodeJob(str(path), 1.0, 64, want_audio=True, speech=True))
    assert isinstance(result, prep.Prepared), result
    assert heard and heard[0] == pytest.approx(1000, abs=20)
    assert _dominant_hz(result.audio, 16000) == pytest.approx(1000, abs=20)


# ----------------------------------------------------------------------------------------- P5


def test_a_subtitle_named_like_the_video_but_for_letter_case_is_found(tmp_path):
    """Libraries copied from Windows and macOS hold `Holiday.mp4` + `holiday.srt`; an exact-case file
    wins where both exist, and a file that exactly names another video in the folder stays that video's."""
    one = tmp_path / "one"
    one.mkdir()
    for name in ("Holiday.mp4", "holiday.srt", "HOLIDAY.en.VTT"):
        (one / name).touch()
    assert find_subtitles(one / "Holiday.mp4") == [(one / "holiday.srt", None), (one / "HOLIDAY.en.VTT", "en")]
    both = tmp_path / "both"
    both.mkdir()
    for name in ("Holiday.mp4", "holiday.srt", "Holiday.srt"):
        (both / name).touch()
    assert find_subtitles(both / "Holiday.mp4") == [(both / "Holiday.srt", None)]
    two = tmp_path / "two"
    two.mkdir()
    for name in ("Holiday.mp4", "holiday.mp4", "holiday.srt", "HOLIDAY.part2.srt", "Holiday.Part2.mkv"):
        (two / name).touch()
    assert find_subtitles(two / "Holiday.mp4") == []  # holiday.srt is holiday.mp4's; part2 is Holiday.Part2.mkv's
    assert find_subtitles(two / "holiday.mp4") == [(two / "holiday.srt", None)]


# ----------------------------------------------------------------------------------------- N3


def _discover_or_unblock(paths: list[Path], fifos: list[Path], **kw):
    """discover(paths), failing (not hanging) if it blocks: a writer opening and closing each FIFO
    releases a reader stuck in open()."""
    out: list = []
    t = threading.Thread(target=lambda: out.append(discover(paths, **kw)), daemon=True)
    t.start()
    t.join(10)
    hung = t.is_alive()
    if hung:
        for fifo in fifos:
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        t.join(10)
    assert not hung, "discover() blocked opening a FIFO"
    return out[0]


def test_a_manifest_that_is_a_fifo_is_reported_not_opened(tmp_path):
    """A FIFO named `*.jsonl` would block the reader in open() until someone writes to it (a server job
    held the index's write lock until restart): it is reported like any non-regular file. Sniffing a
    file with no extension (here a link to a FIFO outside the library) does not open one either."""
    fifo = tmp_path / "jobs.jsonl"
    os.mkfifo(fifo)
    sources, problems = _discover_or_unblock([fifo], [fifo])
    assert sources == [] and len(problems) == 1
    assert problems[0][0] == str(fifo) and "not a regular file (FIFO)" in problems[0][1]
    (tmp_path / "lib").mkdir()
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    os.symlink(pipe, tmp_path / "lib" / "capture")
    assert _discover_or_unblock([tmp_path / "lib"], [pipe]) == ([], [])


# ----------------------------------------------------------------------------------------- N2


def test_a_server_job_manifest_may_name_only_videos_under_the_library_roots(tmp_path):
    """A manifest under a root must not become a way to read the server's disk: with `roots`, every
    entry (after resolving `..` and links) lies under one or is reported, unread and without saying
    whether it exists. Without `roots` (the CLI: the operator names what it indexes) nothing changes."""
    lib, outside = tmp_path / "lib", tmp_path / "outside"
    (lib / "man").mkdir(parents=True)
    outside.mkdir()
    inside = lib / "inside.mp4"
    ffmpeg(*RED_BLUE[:4], *H264, str(inside))
    private = outside / "private.mp4"
    shutil.copy(inside, private)
    os.symlink(private, lib / "link out.mp4")
    manifest = lib / "man" / "outside.jsonl"
    lines = ['{"video": "../inside.mp4"}', f'{{"video": "{private}"}}', '{"video": "../../outside/private.mp4"}',
             '{"video": "/root/no-such-file"}', '{"video": "../link out.mp4"}']  # fmt: skip
    manifest.write_text("\n".join(lines) + "\n")
    sources, problems = read_manifest(manifest, roots=[str(lib)])
    assert _keys(sources) == {"inside.mp4"}
    assert [w.rsplit(":", 1)[1] for w, _ in problems] == ["2", "3", "4", "5"]
    for _, problem in problems:
        assert "outside the server's library roots" in problem and "exist" not in problem, problem
    # an object in S3 is outside local roots too (it would be read with the server's credentials)
    remote = lib / "man" / "remote.jsonl"
    remote.write_text('{"video": "s3://bucket/key.mp4"}\n')
    assert [p for _, p in read_manifest(remote, roots=[str(lib)])[1]] == ["video s3://bucket/key.mp4 is outside the server's library roots: not read"]
    # discover passes the roots on; a folder walk that follows links is held to them too
    sources, problems = discover([manifest], roots=[str(lib)])
    assert _keys(sources) == {"inside.mp4"} and len(problems) == 4
    sources, problems = discover([lib], follow_symlinks=True, roots=[str(lib)])
    assert _keys(sources) == {"inside.mp4"}
    assert [(Path(w).name, "outside the server's library roots" in p) for w, p in problems] == [("link out.mp4", True)]
    # the CLI keeps no such restriction
    sources, _ = read_manifest(manifest)
    assert {"inside.mp4", "private.mp4", "link out.mp4"} <= _keys(sources)


def test_video_cd_files_and_raw_camera_streams_are_found_and_reported(tmp_path):
    """A Video CD's AVSEQ01.DAT (RIFF/CDXA) is found by its first bytes; a dash camera's raw .h264 is
    listed and fails with a message that says what to do, never skipped without a word."""
    from vidsearch.indexer.probe import MediaError

    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "AVSEQ01.DAT").write_bytes(b"RIFF\x00\x10\x00\x00CDXAfmt " + bytes(760))
    raw = lib / "front.h264"
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=96x64:r=10:d=1", *H264, "-f", "h264", str(raw))
    sources, _ = discover([lib])
    assert _keys(sources) == {"AVSEQ01.DAT", "front.h264"}
    with pytest.raises(MediaError, match="raw h264 stream with no container"):
        probe(raw)


def test_a_container_length_far_past_the_picture_and_sound_is_not_the_duration(tmp_path, monkeypatch):
    """An MKV whose DVD subtitle track's wrapped timestamp made the container 4,294,967 s long (its video
    and audio tracks say 4 s in their DURATION tags) was stored as 1193 hours."""
    from vidsearch.indexer import probe as probe_module

    path = tmp_path / "dvdsub.mkv"
    ffmpeg("-f", "lavfi", "-i", "color=red:s=96x64:r=10:d=4", *H264, str(path))
    info = {"format": {"format_name": "matroska,webm", "duration": "4294967.295000", "start_time": "0.000000"},
            "streams": [{"index": 0, "codec_type": "video", "codec_name": "h264", "width": 96, "height": 64, "avg_frame_rate": "10/1",
                         "r_frame_rate": "10/1", "start_time": "0.000000", "tags": {"DURATION": "00:00:04.000000000"}},
                        {"index": 1, "codec_type": "audio", "codec_name": "aac", "start_time": "0.000000", "tags": {"DURATION": "00:00:03.500000000"}},
                        {"index": 2, "codec_type": "subtitle", "codec_name": "dvd_subtitle", "tags": {"DURATION": "1193:02:47.295000000"}}]}  # fmt: skip
    monkeypatch.setattr(probe_module, "ffprobe_json", lambda p: info)
    assert probe(path).duration == pytest.approx(4.0)
    info["streams"][1]["tags"]["DURATION"] = "00:03:00.000000000"  # speech that outlasts the picture still counts
    info["format"]["duration"] = "180.0"
    assert probe(path).duration == pytest.approx(180.0)


def test_camera_proxies_beside_their_recordings_are_not_indexed_twice(tmp_path):
    """GoPro's GL010001.LRV (an MP4, found by its first bytes) was indexed beside GX010001.MP4, so every
    moment came back twice; a proxy whose recording is not there is still indexed."""
    lib = tmp_path / "lib"
    lib.mkdir()
    mp4 = lib / "GX010001.MP4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=96x64:r=10:d=1", *H264, str(mp4))
    for name in ("GL010001.LRV", "GOPR0002.MP4", "GOPR0002.LRV", "DJI_0003.mp4", "DJI_0003.LRF", "GL010009.LRV"):
        shutil.copy(mp4, lib / name)
    sources, problems = discover([lib])
    assert problems == []
    assert _keys(sources) == {"GX010001.MP4", "GOPR0002.MP4", "DJI_0003.mp4", "GL010009.LRV"}
