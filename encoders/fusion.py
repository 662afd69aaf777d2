"""TEFAL-style fusion: the query attends to the frames and, separately, to the audio tokens.

Two independent X-Pool blocks (own parameters, no joint audio-visual attention) give z_{v|t} and
z_{a|t}. Independence matters: under joint attention the stronger modality (usually vision) soaks up
the weight and suppresses exactly the audio a query like "a dog barking" is about.

    fused = s_video + w * gate * s_audio

w is a learned scalar that starts small, so an untrained head ranks as X-Pool alone and audio only
earns influence through training. The gate, sigmoid(alpha * (max_j cos(t, a_j) - beta)), looks at
how well the *best* audio token matches the query before trusting the pooled audio score: silent or
irrelevant soundtracks (music beds, room tone) have no token close to the text and are shut out, where
a pooled score alone would still add noise. A video with no audio tokens gets gate 0, so its fused
score is exactly its video score.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .focus import FocusMix
from .temporal import TemporalMixer
from .xpool import XPool

__all__ = ["FusionHead"]


class FusionHead(nn.Module):
    def __init__(
        self,
        dim: int,
        heads: int = 1,
        dropout: float = 0.0,
        audio_weight: float = 0.1,
        gate_scale: float = 10.0,
        gate_bias: float = 0.2,
        temporal: bool = False,
        temporal_cues: int = 0,
        focus: float = 0.0,
        video_attention: float = 1.0,
        window_weight: float | None = None,
    ):
        super().__init__()
        # Not used here: search's fine stage adds each video's best event window (search/event_windows.py)
        # to this head's video-level score with this weight (None: search's EVENT_WEIGHT). A softer video
        # head pools more like the mean, so the window's local evidence counts more; chosen with the head
        # on the held-out selection set (encoders/head_tuning.py, README "X-Pool retuned alone").
        self.window_weight = None if window_weight is None else float(window_weight)
        # Applied where unit vectors are made (encoders/temporal.py), not in scores(): stored units
        # already carry order, so search re-ranks them as they are.
        self.temporal = TemporalMixer(dim, cues=temporal_cues) if temporal else None  # cues: where_cues read from pixels
        # also applied where unit vectors are made: each frame's crop around what moves (encoders/focus.py)
        self.focus = FocusMix(focus) if focus else None
        self.video = XPool(dim, heads, dropout, attention_scale=video_attention)  # how sharply the text picks frames
        self.audio = XPool(dim, heads, dropout)
        self.audio_weight = nn.Parameter(torch.tensor(float(audio_weight)))
        self.gate_scale = nn.Parameter(torch.tensor(float(gate_scale)))
        self.gate_bias = nn.Parameter(torch.tensor(float(gate_bias)))

    @property
    def reads_cues(self) -> bool:
        """Whether making units needs each frame's where-cue (the focus view or a temporal module
        that reads cues: encoders/unit_head.py, and the trainer)."""
        return self.focus is not None or (self.temporal is not None and bool(self.temporal.cues))

    def gate(self, text: Tensor, audio: Tensor, audio_mask: Tensor) -> Tensor:
        """[Bt, Bv] trust in each video's audio for each text; 0 where a video has no audio token."""
        has_audio = audio_mask.any(-1)
        if audio.shape[1] == 0:
            return text.new_zeros(text.shape[0], audio.shape[0])
        cos = torch.einsum("td,vad->tva", F.normalize(text, dim=-1), F.normalize(audio, dim=-1))
        best = cos.masked_fill(~audio_mask[None], -1.0).amax(-1)
        g = torch.sigmoid(self.gate_scale * (best - self.gate_bias))
        return g * has_audio.to(g.dtype)

    def scores(
        self,
        text: Tensor,
        frames: Tensor,
        frame_mask: Tensor | None = None,
        audio: Tensor | None = None,
        audio_mask: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Every text [Bt, D] against every video: frames [Bv, T, D], audio [Bv, A, D] (or None).

        Returns video, audio, gate, fused ([Bt, Bv]) and frame_weights [Bt, Bv, T], audio_weights
        [Bt, Bv, A], so a result can say which channel matched and where.
        """
        s_video, frame_weights = self.video.similarity_and_weights(text, frames, frame_mask)
        if audio is None:
            audio = frames.new_zeros(frames.shape[0], 0, frames.shape[-1])
        if audio_mask is None:
            audio_mask = torch.ones(audio.shape[:2], dtype=torch.bool, device=audio.device)
        audio_mask = audio_mask.to(torch.bool)
        gate = self.gate(text, audio, audio_mask)
        if audio.shape[1] == 0:
            s_audio = torch.zeros_like(s_video)
            audio_weights = s_video.new_zeros(*s_video.shape, 0)
        else:
            s_audio, audio_weights = self.audio.similarity_and_weights(text, audio, audio_mask)
        fused = s_video + self.audio_weight * gate * s_audio
        return {
            "video": s_video,
            "audio": s_audio,
            "gate": gate,
            "fused": fused,
            "frame_weights": frame_weights,
            "audio_weights": audio_weights,
        }

    forward = scores

    def rerank(
        self,
        text: Tensor,
        frames: Tensor,
        frame_mask: Tensor | None = None,
        audio: Tensor | None = None,
        audio_mask: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """One query [D] against Bv candidates, through X-Pool's cheap folded path; values are [Bv] / [Bv, *]."""
        s_video, frame_weights = self.video.rerank(text, frames, frame_mask)
        t = text.reshape(1, -1)
        if audio is None:
            audio = frames.new_zeros(frames.shape[0], 0, frames.shape[-1])
        if audio_mask is None:
            audio_mask = torch.ones(audio.shape[:2], dtype=torch.bool, device=audio.device)
        audio_mask = audio_mask.to(torch.bool)
        gate = self.gate(t, audio, audio_mask)[0]
        if audio.shape[1] == 0:
            s_audio, audio_weights = torch.zeros_like(s_video), s_video.new_zeros(s_video.shape[0], 0)
        else:
            s_audio, audio_weights = self.audio.rerank(text, audio, audio_mask)
        return {
            "video": s_video,
            "audio": s_audio,
            "gate": gate,
            "fused": s_video + self.audio_weight * gate * s_audio,
            "frame_weights": frame_weights,
            "audio_weights": audio_weights,
        }
