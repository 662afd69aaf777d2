"""Contrastive loss for text-video heads: symmetric InfoNCE over a batch similarity matrix.

Row i of ``sims`` is text i against every video of the batch (for X-Pool each entry was pooled under
that text), and video i is text i's positive, so the targets are the diagonal. Both directions are
averaged, as CLIP does, because search asks text->video while the moment and explanation paths lean on
videos telling their own caption from the others'.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ContrastiveLoss", "info_nce"]


def info_nce(sims: Tensor, logit_scale: Tensor | float = 100.0) -> Tensor:
    """Symmetric InfoNCE of a square [B, B] cosine matrix with positives on the diagonal.

    ``logit_scale`` multiplies the cosines (the exponentiated CLIP temperature, e.g. 1/0.07 at the
    start of training, 100 once trained): cosines live in [-1, 1], which alone is far too flat a
    softmax to separate a batch.
    """
    if sims.dim() != 2 or sims.shape[0] != sims.shape[1]:
        raise ValueError(f"expected a square similarity matrix, got {tuple(sims.shape)}")
    logits = sims * logit_scale
    target = torch.arange(sims.shape[0], device=sims.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


class ContrastiveLoss(nn.Module):
    """InfoNCE with the logit scale as CLIP keeps it: a log-parameter, learnable or fixed, capped.

    Learning the log keeps the scale positive and its steps multiplicative; the cap (100, as CLIP)
    stops the scale running away and the loss collapsing to a few hard examples.
    """

    def __init__(self, init_scale: float = 1 / 0.07, learnable: bool = True, max_scale: float = 100.0):
        super().__init__()
        log_scale = torch.tensor(math.log(init_scale))
        if learnable:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)
        self.max_log_scale = math.log(max_scale)

    @property
    def scale(self) -> Tensor:
        return self.log_scale.clamp(max=self.max_log_scale).exp()

    def forward(self, sims: Tensor) -> Tensor:
        return info_nce(sims, self.scale)
