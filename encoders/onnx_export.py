"""Export the frame and text towers as ONNX into a Triton model repository (`vidsearch export-triton`).

Why a Triton repository: operators with a GPU fleet run one encoder service that indexers and query
servers share, instead of a torch model in every process. The repository is the standard layout
(deploy/triton/README.md):

    OUT/<prefix>_image/config.pbtxt   OUT/<prefix>_image/1/model.onnx
    OUT/<prefix>_text/config.pbtxt    OUT/<prefix>_text/1/model.onnx
    OUT/export_report.json            what was exported and how well it matches torch

What goes over the wire, and why:
- **Frames travel as uint8 NHWC**, exactly as the indexer's decoder hands them over (resized and
  centre-cropped to the tower's input size, RGB, 0..255). The scale to 0..1 and the model's mean/std
  are folded into the graph. A 224x224 frame is 150 KB as uint8 against 602 KB as float32: 4x less
  on the wire and in the server's queue, and nothing for the client to compute.
- **Text travels as int32 token ids** [B, context_length]: tokenising is cheap, needs no weights,
  and keeps the ONNX graph free of string ops (Triton's ONNX Runtime backend has none). int32
  because every vocabulary we ship fits, and it halves int64.
- **Vectors come back L2-normalised float32**, the form the store keeps.

Token merging: per-frame ToMe (`r=N`, no temporal groups) exports; the graph is the merging forward
traced at the tower's fixed token count, and it matches torch (the export check says by how much).
Temporal grouping (TempMe `groups=...`) does not export: which frames merge depends on which video
each frame belongs to and where its group starts, decided in Python per batch, so there is no single
graph with a fixed signature. Exporting such a setting is a clear error.

Each model's `config.pbtxt` carries the model fingerprint in its `parameters`, so a client can refuse
a server that encodes with another model than the index was built with.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .backbone import ClipBackbone, ModelLoadError

IMAGE_INPUT = "frames"
TEXT_INPUT = "tokens"
OUTPUT = "embedding"
FINGERPRINT_PARAM = "vidsearch_fingerprint"
ROLE_PARAM = "vidsearch_role"
DEFAULT_PREFIX = "vidsearch"
REPORT_FILE = "export_report.json"
COSINE_THRESHOLD = 0.999
OPSET = 17

# Sentences in the style of MSR-VTT / our synthetic corpus, for the export check when none are given.
DEFAULT_CAPTIONS = (
    "a dog catches a red frisbee in the park",
    "a man is cooking pasta in a small kitchen",
    "a green box drifts upward while a deep beep rings out",
    "two people are talking about the weather",
    "a car drives along a coastal road at sunset",
    "a cat jumps onto a table",
    "someone plays a guitar on a stage",
    "a blue circle moves to the left",
    "children are playing football on a field",
    "the revenue grew by ten percent this year",
    "a woman explains how to fold a paper plane",
    "x",
)


class ExportError(ModelLoadError):
    """The model or setting cannot be exported as asked; the message says what can."""


def model_names(prefix: str = DEFAULT_PREFIX) -> tuple[str, str]:
    """(image model, text model) names in the repository and on the server."""
    return f"{prefix}_image", f"{prefix}_text"


class FrameEncoder(nn.Module):
    """uint8 frames [B, S, S, 3] -> unit vectors [B, D]: the preprocessing the client would do, in the graph."""

    def __init__(self, backbone: ClipBackbone):
        super().__init__()
        self.model = backbone.model
        # (x / 255 - mean) / std  ==  (x - 255 mean) / (255 std): one subtract and one divide
        self.register_buffer("mean", (backbone.mean.detach().float().cpu() * 255.0).view(1, 1, 1, 3))
        self.register_buffer("std", (backbone.std.detach().float().cpu() * 255.0).view(1, 1, 1, 3))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = ((frames.to(torch.float32) - self.mean) / self.std).permute(0, 3, 1, 2)
        return nn.functional.normalize(self.model.encode_image(x).float(), dim=-1)


class TextEncoder(nn.Module):
    """int32 token ids [B, L] -> unit vectors [B, D] (open_clip text transformer or a Hugging Face tower)."""

    def __init__(self, backbone: ClipBackbone):
        super().__init__()
        self.model = backbone.model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.model.encode_text(tokens.to(torch.int64)).float(), dim=-1)


def context_length(backbone: ClipBackbone) -> int:
    """Token positions the text tower takes (the tokenizer pads or truncates to it)."""
    probe = backbone.tokenizer(["a"])
    return int(probe.shape[-1])


def check_exportable(backbone: ClipBackbone) -> None:
    """Refuse settings whose graph depends on Python-side decisions per batch (temporal grouping)."""
    from .token_merging import merge_config_of

    config = merge_config_of(backbone.model)
    if config.groups:
        raise ExportError(
            f"token merging {config.canonical()} groups neighbouring frames (TempMe), which does not export "
            f"to ONNX: the units depend on which video each frame belongs to, decided per batch in Python. "
            f"Export with --token-merging off, or with per-frame merging only (e.g. --token-merging 'r=1')."
        )
    if backbone.visual_dtype != torch.float32:
        raise ExportError("export the towers in fp32 (load the backbone with precision='fp32')")


@dataclass
class Agreement:
    """How closely the ONNX graph reproduces torch on the check inputs."""

    role: str
    inputs: int
    min_cosine: float
    mean_cosine: float
    passed: bool


@dataclass
class ExportReport:
    out: str
    fingerprint: dict
    fingerprint_id: str
    image_model: str
    text_model: str
    image_size: int
    context_length: int
    dim: int
    merging: str
    max_batch_size: int
    instance_kind: str
    wire: dict
    checks: list[Agreement] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["passed"] = self.passed
        return d


def _pbtxt_string(value: str) -> str:
    """A protobuf text-format string literal (JSON's escapes are a subset it reads)."""
    return json.dumps(value, ensure_ascii=True)


def triton_config(
    name: str,
    input_name: str,
    input_type: str,
    input_dims: list[int],
    dim: int,
    max_batch_size: int,
    queue_delay_us: int,
    instance_kind: str,
    instances: int,
    parameters: dict[str, str],
) -> str:
    """config.pbtxt for an ONNX Runtime model with dynamic batching.

    instance_kind "auto" writes KIND_AUTO: Triton places the instances on the GPUs when the server
    has any and on the CPU otherwise, so one repository serves a GPU fleet and this CPU machine.
    Preferred batch sizes are the full batch and its halves: a client that sends full batches is
    answered at once; partial ones wait at most `queue_delay_us` for company.
    """
    kind = {"auto": "KIND_AUTO", "gpu": "KIND_GPU", "cpu": "KIND_CPU"}[instance_kind]
    preferred = sorted({max(1, max_batch_size // 4), max(1, max_batch_size // 2), max_batch_size})
    lines = [
        f"name: {_pbtxt_string(name)}",
        'platform: "onnxruntime_onnx"',
        f"max_batch_size: {max_batch_size}",
        "input [",
        f"  {{ name: {_pbtxt_string(input_name)} data_type: {input_type} dims: [ {', '.join(map(str, input_dims))} ] }}",
        "]",
        "output [",
        f"  {{ name: {_pbtxt_string(OUTPUT)} data_type: TYPE_FP32 dims: [ {dim} ] }}",
        "]",
        "dynamic_batching {",
        f"  preferred_batch_size: [ {', '.join(map(str, preferred))} ]",
        f"  max_queue_delay_microseconds: {queue_delay_us}",
        "}",
        f"instance_group [ {{ count: {instances} kind: {kind} }} ]",
        "version_policy: { latest: { num_versions: 1 } }",
    ]
    for key, value in parameters.items():
        lines.append(f"parameters {{ key: {_pbtxt_string(key)} value: {{ string_value: {_pbtxt_string(value)} }} }}")
    return "\n".join(lines) + "\n"


def _export_onnx(module: nn.Module, example: torch.Tensor, path: Path, input_name: str) -> None:
    import warnings

    try:
        import onnx  # noqa: F401 - torch's exporter needs it; say so before a long trace
    except ImportError as exc:
        raise ExportError("exporting needs the `onnx` package: pip install 'vidsearch[triton]'") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    # grad mode on: under no_grad, nn.MultiheadAttention takes its fused fast path
    # (aten::_native_multi_head_attention), which has no ONNX export
    with warnings.catch_warnings(), torch.inference_mode(False), torch.enable_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow on constant shapes
        torch.onnx.export(
            module.eval(),
            (example,),
            str(path),
            input_names=[input_name],
            output_names=[OUTPUT],
            dynamic_axes={input_name: {0: "batch"}, OUTPUT: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,  # the TorchScript tracer: no onnxscript needed, and it handles our towers
        )


def _agreement(role: str, path: Path, inputs: np.ndarray, reference: np.ndarray, input_name: str) -> Agreement:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ExportError("the export check needs onnxruntime: pip install 'vidsearch[triton]'") from exc
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    got = np.concatenate([session.run([OUTPUT], {input_name: inputs[i : i + 32]})[0] for i in range(0, len(inputs), 32)])
    cos = np.sum(got * reference, axis=-1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(reference, axis=-1))
    return Agreement(role, len(inputs), float(cos.min()), float(cos.mean()), bool(cos.min() >= COSINE_THRESHOLD))


def export_triton(
    backbone: ClipBackbone,
    out: Path,
    frames: np.ndarray,
    captions: list[str] | tuple[str, ...] = DEFAULT_CAPTIONS,
    prefix: str = DEFAULT_PREFIX,
    max_batch_size: int = 64,
    image_queue_delay_us: int = 2000,
    text_queue_delay_us: int = 500,
    instance_kind: str = "auto",
    instances: int = 1,
) -> ExportReport:
    """Write the repository for `backbone` (loaded in fp32) under `out`, then check ONNX against torch.

    frames: uint8 [N, S, S, 3] as the indexer decodes them; captions: sentences. The check runs the
    written ONNX files with onnxruntime and compares with the same backbone in torch; a model below
    cosine 0.999 is still written (the report says it failed) so it can be inspected.
    """
    t0 = time.monotonic()
    check_exportable(backbone)
    if instance_kind not in ("auto", "gpu", "cpu"):
        raise ExportError(f"instance kind must be auto, gpu or cpu, not {instance_kind!r}")
    if max_batch_size < 1:
        raise ExportError("max batch size must be at least 1")
    size = backbone.image_size
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or frames.shape[1:] != (size, size, 3) or len(frames) == 0:
        raise ExportError(f"check frames must be uint8 [N, {size}, {size}, 3], got {frames.shape}")
    captions = [c for c in captions if c.strip()]
    if not captions:
        raise ExportError("the export check needs at least one caption")
    out = Path(out)
    image_name, text_name = model_names(prefix)
    fp = backbone.fingerprint
    length = context_length(backbone)
    common = {FINGERPRINT_PARAM: json.dumps(fp.model_dump(), sort_keys=True), "vidsearch_fingerprint_id": fp.id}

    image_params = {
        **common,
        ROLE_PARAM: "image",
        "vidsearch_input": f"uint8 RGB frames [B, {size}, {size}, 3], resized and centre-cropped, 0..255",
    }
    text_params = {**common, ROLE_PARAM: "text", "vidsearch_input": f"int32 token ids [B, {length}] from the model's tokenizer"}
    configs = {
        image_name: triton_config(image_name, IMAGE_INPUT, "TYPE_UINT8", [size, size, 3], fp.dim, max_batch_size,
                                  image_queue_delay_us, instance_kind, instances, image_params),  # fmt: skip
        text_name: triton_config(text_name, TEXT_INPUT, "TYPE_INT32", [length], fp.dim, max_batch_size,
                                 text_queue_delay_us, instance_kind, instances, text_params),  # fmt: skip
    }
    tokens = backbone.tokenizer(captions).to(torch.int32)
    image_onnx = out / image_name / "1" / "model.onnx"
    text_onnx = out / text_name / "1" / "model.onnx"
    _export_onnx(FrameEncoder(backbone), torch.from_numpy(frames[:2].copy()), image_onnx, IMAGE_INPUT)
    _export_onnx(TextEncoder(backbone), tokens[:2].clone(), text_onnx, TEXT_INPUT)
    for name, text in configs.items():
        (out / name / "config.pbtxt").write_text(text)

    ref_frames = np.concatenate([backbone.encode_frames(frames[i : i + 32]) for i in range(0, len(frames), 32)])
    ref_text = backbone.encode_text(captions)
    checks = [
        _agreement("image", image_onnx, frames, ref_frames, IMAGE_INPUT),
        _agreement("text", text_onnx, tokens.numpy(), ref_text, TEXT_INPUT),
    ]
    report = ExportReport(
        out=str(out), fingerprint=fp.model_dump(), fingerprint_id=fp.id, image_model=image_name, text_model=text_name,
        image_size=size, context_length=length, dim=fp.dim, merging=fp.merging, max_batch_size=max_batch_size,
        instance_kind=instance_kind, checks=checks, seconds=round(time.monotonic() - t0, 1),
        wire={"frames": f"uint8 [B, {size}, {size}, 3] ({size * size * 3} bytes a frame; float32 would be {4 * size * size * 3})",
              "tokens": f"int32 [B, {length}]", "output": f"float32 [B, {fp.dim}], L2-normalised"},
    )  # fmt: skip
    (out / REPORT_FILE).write_text(json.dumps(report.as_dict(), indent=2))
    return report
