"""Make `import open_clip` work where torchvision's wheel does not match the installed torch.

The registry's torchvision build is linked against CUDA torch; with the CPU wheel of the same torch
its C ops never register, and importing torchvision dies with
``RuntimeError: operator torchvision::nms does not exist``. open_clip imports torchvision only for
transforms and a batch-norm helper, neither of which needs the C ops, so declaring the two op schemas
that torchvision's fake-tensor registrations look up is enough. Users whose torch and torchvision
match never take this path.
"""

from __future__ import annotations

import sys

_LIBRARY = None  # kept alive: dropping the Library object unregisters its op schemas


def _declare_missing_ops() -> None:
    import torch

    global _LIBRARY
    _LIBRARY = torch.library.Library("torchvision", "FRAGMENT")
    _LIBRARY.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIBRARY.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")


def import_open_clip():
    """Import and return open_clip, applying the torchvision schema fix only when it is needed."""
    try:
        import open_clip
    except RuntimeError as exc:
        if "torchvision::nms does not exist" not in str(exc):
            raise
        for name in [m for m in sys.modules if m.split(".")[0] in ("torchvision", "open_clip")]:
            del sys.modules[name]
        _declare_missing_ops()
        import open_clip
    return open_clip
