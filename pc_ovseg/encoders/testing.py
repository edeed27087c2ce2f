"""Tiny random-initialised CLIP and SAM checkpoints of the real architectures, for tests.

No weights can be downloaded in CI; these build few-MB models, save their state dicts, and
return what a user would pass on the command line, so tests go through the public loading path.
"""
from __future__ import annotations

import os

#: open_clip model name of the tiny ViT CLIP shipped in pc_ovseg/encoders/model_configs
TINY_TEST_MODEL = "pcovseg-tiny-ViT"


def make_tiny_clip_checkpoint(path: str | os.PathLike, seed: int = 0) -> str:
    """Write a random tiny CLIP state dict to ``path``; returns the encoder spec that loads it
    (``clip:pcovseg-tiny-ViT:<path>``, i.e. --clip-model pcovseg-tiny-ViT --clip-weights <path>)."""
    import torch
    from .clip import _open_clip
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        torch.manual_seed(seed)
        model = _open_clip().create_model(TINY_TEST_MODEL, pretrained=None)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        torch.save(model.state_dict(), path)
    return f"clip:{TINY_TEST_MODEL}:{path}"


def make_tiny_sam_checkpoint(path: str | os.PathLike, seed: int = 0) -> str:
    """Write a random tiny SAM state dict (architecture inferred on load: --sam-model auto)."""
    import torch
    from .sam import SAM_ARCHS, build_sam
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        torch.manual_seed(seed)
        sam = build_sam(SAM_ARCHS["tiny"])
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        torch.save(sam.state_dict(), path)
    return path
