"""`vidsearch export-triton OUT`: write the frame and text towers as a Triton model repository.

The command lives here, not in cli.py, so the exporter's flags stay in one place; the exporting itself
is `vidsearch.encoders.onnx_export`. Check frames are decoded the way the indexer decodes them
(`indexer.prepare`), from `--check-video` files or, when none are given, from short clips that ffmpeg
draws (test patterns, a Mandelbrot zoom), so the check runs on decoded video frames, never on noise.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

CHECK_SOURCES = ("testsrc2", "mandelbrot", "smptebars", "rgbtestsrc")
VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov", ".webm", ".avi", ".m4v"}


def _check_videos(paths: list[Path], limit: int = 8) -> list[Path]:
    found: list[Path] = []
    for p in paths:
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.suffix.lower() in VIDEO_SUFFIXES)
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"--check-video {p} does not exist")
    return found[:limit]


def _drawn_clips(folder: Path) -> list[Path]:
    clips = []
    for name in CHECK_SOURCES:
        out = folder / f"{name}.mp4"
        cmd = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"{name}=size=320x240:rate=10", "-t", "3",
               "-pix_fmt", "yuv420p", str(out)]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
        clips.append(out)
    return clips


def check_frames(videos: list[Path], image_size: int, sample_fps: float = 2.0):
    """uint8 frames [N, S, S, 3] decoded from `videos` exactly as the indexer decodes them."""
    import numpy as np

    from vidsearch.indexer.prepare import DecodeJob, Failed, prepare

    frames = []
    for v in videos:
        got = prepare(DecodeJob(str(v), sample_fps, image_size, want_audio=False))
        if isinstance(got, Failed):
            raise FileNotFoundError(f"check video {v} cannot be decoded: {got.error}")
        frames.append(got.frames.frames)
    return np.concatenate(frames)


def export_triton_command(
    out: Annotated[Path, typer.Argument(help="Model repository to write (e.g. deploy/triton/models).", show_default=False)],
    model: Annotated[Optional[str], typer.Option("--model", help="open_clip model name, or `tiny` [VIDSEARCH_MODEL; default ViT-B-32].")] = None,
    pretrained: Annotated[Optional[str], typer.Option("--pretrained", help="open_clip pretrained tag; `none` for random weights.")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", help="Local weights file.")] = None,
    token_merging: Annotated[Optional[str], typer.Option("--token-merging", help="off, or per-frame merging such as 'r=1' (temporal grouping does not export).")] = None,
    prefix: Annotated[str, typer.Option("--prefix", help="Served model names: PREFIX_image, PREFIX_text.")] = "vidsearch",
    max_batch_size: Annotated[int, typer.Option("--max-batch-size", min=1, max=1024, help="Largest batch a request (or the dynamic batcher) may form.")] = 64,
    image_queue_delay_us: Annotated[int, typer.Option("--image-queue-delay-us", min=0, help="Dynamic batching: how long a partial frame batch waits for company.")] = 2000,
    text_queue_delay_us: Annotated[int, typer.Option("--text-queue-delay-us", min=0, help="Dynamic batching: the same for queries (latency-bound: keep it short).")] = 500,
    instance_kind: Annotated[str, typer.Option("--instance-kind", help="auto (GPU when the server has one, else CPU) | gpu | cpu.")] = "auto",
    instances: Annotated[int, typer.Option("--instances", min=1, help="Model instances per device.")] = 1,
    check_video: Annotated[Optional[list[Path]], typer.Option("--check-video", help="Videos (or folders) whose frames the export check encodes; default: clips drawn by ffmpeg.")] = None,
    check_captions: Annotated[Optional[Path], typer.Option("--check-captions", exists=True, dir_okay=False, help="Captions for the export check, one a line; default: built-in sentences.")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="TOML settings file.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")] = False,
) -> None:
    """Export the frame and text towers to ONNX as a Triton model repository, and check them against torch.

    Writes PREFIX_image and PREFIX_text (config.pbtxt with dynamic batching, the model fingerprint in
    its parameters, and 1/model.onnx) and prints the cosine of ONNX to torch on decoded frames and
    captions. Exit code 1 when a check falls below 0.999.
    """
    from vidsearch.encoders import ModelLoadError

    from .clitools import err, user_errors
    from .clitools import fail as _fail
    from .clitools import print_json as _print_json
    from .clitools import settings_from as _settings

    settings = _settings(config, model=model, pretrained=pretrained, checkpoint=checkpoint, token_merging=token_merging)
    try:
        from vidsearch.encoders.backbone import load_backbone
        from vidsearch.encoders.onnx_export import DEFAULT_CAPTIONS, export_triton

        backbone = load_backbone(settings.model, settings.pretrained, settings.checkpoint, precision="fp32",
                                 device="cpu", merging=settings.token_merging)  # fmt: skip
        captions = DEFAULT_CAPTIONS
        if check_captions is not None:
            captions = [line.strip() for line in check_captions.read_text(encoding="utf-8").splitlines() if line.strip()]
        with tempfile.TemporaryDirectory(prefix="vidsearch-export-") as tmp:
            videos = _check_videos(check_video) if check_video else _drawn_clips(Path(tmp))
            if not videos:
                raise FileNotFoundError(f"no videos found in --check-video {', '.join(map(str, check_video or []))}")
            frames = check_frames(videos, backbone.image_size)
        if not json_out:
            err.print(escape(f"exporting {backbone.fingerprint.describe()} to {out} (check: {len(frames)} frames "
                             f"from {len(videos)} videos, {len(captions)} captions)"), highlight=False)  # fmt: skip
        report = export_triton(backbone, out, frames, captions, prefix=prefix, max_batch_size=max_batch_size,
                               image_queue_delay_us=image_queue_delay_us, text_queue_delay_us=text_queue_delay_us,
                               instance_kind=instance_kind, instances=instances)  # fmt: skip
    except subprocess.CalledProcessError as exc:
        _fail(f"ffmpeg could not draw the check clips ({exc.stderr.decode(errors='replace').strip()}); pass --check-video")
    except (ModelLoadError, *user_errors()) as exc:
        _fail(str(exc))
    if json_out:
        _print_json(report.as_dict())
    else:
        print(f"wrote {report.image_model} and {report.text_model} to {report.out} (fingerprint {report.fingerprint_id}, "
              f"{report.dim}-d, frames {report.image_size}x{report.image_size} uint8, {report.context_length} int32 tokens)")  # fmt: skip
        for c in report.checks:
            verdict = "ok" if c.passed else "FAILED (< 0.999)"
            print(f"  export check {c.role:5}: ONNX vs torch cosine min {c.min_cosine:.7f} mean {c.mean_cosine:.7f} "
                  f"over {c.inputs} {'frames' if c.role == 'image' else 'captions'}: {verdict}")  # fmt: skip
        print(f"  report: {Path(report.out) / 'export_report.json'}")
    sys.stdout.flush()
    if not report.passed:
        raise typer.Exit(1)
