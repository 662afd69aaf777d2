"""The sentence tower (the `tiny` text tower: packaged MiniLM + projection) run by ONNX Runtime, for
the query path of a server.

Why: a new query's MiniLM pass was most of its CPU under load (bench/api_load.py). Run by torch, one
short query costs ~27-31 ms of CPU on these cores, most of it Python dispatch through the Hugging Face
modules, not arithmetic; the same graph in ONNX Runtime costs ~12 ms (measured by `bench/text_runtime.py`).
The graph is exported from the loaded tower itself (no file to ship, nothing to keep in sync), with
the batch and the sequence length free, so the padding is cut as in the torch path. One intra-op
thread: concurrent requests already keep the cores busy, and a second thread per call only spins.

Optional: without `onnxruntime` (the `triton` or `speech` extras bring it), or when the exported
graph does not agree with torch (cosine < 0.9999 on probe sentences), `build` returns None and the
torch path serves, as before.
"""

from __future__ import annotations

import io
import logging
import time
import warnings

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

MIN_COSINE = 0.9999
PROBES = (
    "a red circle moves to the left",
    "someone says hello, then a dog barks twice",
    "rain",
    "a man is cooking pasta in a small kitchen while the radio plays",
)

__all__ = ["OnnxSentenceTower"]


class _Both(nn.Module):
    """token ids, mask -> (query vector, sentence vector), both unit length: the torch path's math."""

    def __init__(self, text: nn.Module):
        super().__init__()
        self.text = text

    def forward(self, ids: torch.Tensor, mask: torch.Tensor):
        out = self.text.transformer(input_ids=ids, attention_mask=mask)
        pooled = self.text.pooler(out, mask)
        norm = nn.functional.normalize
        return norm(self.text.proj(pooled).float(), dim=-1), norm(pooled.float(), dim=-1)


class OnnxSentenceTower:
    """`tower(ids, mask)` -> (query vectors (N, D), sentence vectors (N, 384)) as float32 arrays."""

    def __init__(self, session):
        self.session = session
        self.build_seconds = 0.0
        self.min_cosine = 1.0

    @classmethod
    def build(cls, backbone) -> OnnxSentenceTower | None:
        """The backbone's sentence tower in ONNX Runtime, checked against torch; None when it cannot
        be had here (no onnxruntime, not a sentence tower, export failed or disagrees)."""
        if not getattr(backbone, "sentence_tower", False) or backbone.device.type != "cpu":
            return None
        try:
            import onnxruntime as ort
        except ImportError:
            return None
        t0 = time.perf_counter()
        text = backbone.model.text
        ids, mask = _tokens(backbone, list(PROBES))
        buf = io.BytesIO()
        try:
            with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer's notes on shapes: the check below is what counts
                torch.onnx.export(
                    _Both(text).eval(),
                    (ids, mask),
                    buf,
                    input_names=["ids", "mask"],
                    output_names=["query", "sentence"],
                    dynamic_axes={"ids": {0: "batch", 1: "length"}, "mask": {0: "batch", 1: "length"},
                                  "query": {0: "batch"}, "sentence": {0: "batch"}},  # fmt: skip
                    opset_version=17,
                    dynamo=False,  # the TorchScript tracer: no onnxscript needed
                )
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            opts.log_severity_level = 3
            tower = cls(ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"]))
            with torch.inference_mode():
                want_q, want_s = _Both(text).eval()(ids, mask)
            got_q, got_s = tower(ids.numpy(), mask.numpy())
        except Exception:  # noqa: BLE001 - an optimisation: torch serves when the export fails
            log.warning("ONNX export of the text tower failed; queries are encoded by torch", exc_info=True)
            return None
        cos = min(float((got_q * want_q.numpy()).sum(1).min()), float((got_s * want_s.numpy()).sum(1).min()))
        if cos < MIN_COSINE:
            log.warning("ONNX text tower disagrees with torch (cosine %.6f); queries are encoded by torch", cos)
            return None
        tower.min_cosine = cos
        tower.build_seconds = time.perf_counter() - t0
        log.info("text tower in ONNX Runtime (built in %.1f s, min cosine to torch %.6f)", tower.build_seconds, cos)
        return tower

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q, s = self.session.run(None, {"ids": np.asarray(ids, np.int64), "mask": np.asarray(mask, np.int64)})
        return q, s


def _tokens(backbone, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = backbone.tokenizer(texts)
    mask = (tokens != backbone.model.text.config.pad_token_id).long()
    width = max(1, int(mask.sum(dim=1).max()))
    return tokens[:, :width], mask[:, :width]
