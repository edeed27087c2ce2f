"""Bring-your-own 2D inputs: per-view feature maps (LSeg, OpenSeg, ...) or label maps.

Both expose the ViewEncoder interface (``encode(view) -> ViewFeatures``, found by view name),
so fusion treats them exactly like CLIP features.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..data import View, ViewFeatures
from ..errors import InputError, check_input_path
from .base import LabelEncoder, get_encoder


def _find(folder: Path, name: str, exts: Sequence[str]) -> Path | None:
    stem = Path(name).stem if Path(name).suffix in (".jpg", ".png", ".jpeg") else name
    for cand in (name, stem):
        for ext in exts:
            p = folder / f"{cand}{ext}"
            if p.is_file():
                return p
    return None


class PrecomputedFeatures:
    """Per-view (h, w, D) feature maps: ``<dir>/<view name>.npy`` (or .npz with 'features'), or a
    mapping name -> array. ``encoder`` names the text side living in the same space (e.g. the
    CLIP model the 2D model was aligned to) and is recorded with fused results."""

    def __init__(self, source: str | os.PathLike | Mapping[str, np.ndarray], encoder: str = "",
                 normalize: bool = True):
        if isinstance(source, Mapping):
            self.folder, self.mapping = None, dict(source)
        else:
            self.folder, self.mapping = Path(check_input_path(source, want="dir")), None
        self.encoder_spec, self.normalize = encoder, normalize

    @property
    def encoder(self):
        return get_encoder(self.encoder_spec) if self.encoder_spec else None

    def _load(self, view: View) -> np.ndarray:
        if self.mapping is not None:
            if view.name not in self.mapping:
                raise InputError(None, f"no precomputed feature map for view {view.name!r}")
            return np.asarray(self.mapping[view.name])
        p = _find(self.folder, view.name, (".npy", ".npz"))
        if p is None:
            raise InputError(self.folder, f"no feature map for view {view.name!r} (expected {view.name}.npy)")
        try:
            if p.suffix == ".npz":
                with np.load(p, allow_pickle=False) as z:
                    return z["features"] if "features" in z.files else z[z.files[0]]
            return np.load(p, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(p, f"cannot read feature map ({exc})") from None

    def encode(self, view: View) -> ViewFeatures:
        arr = self._load(view)
        if arr.ndim != 3:
            raise InputError(view.name or None, f"feature map must be (h, w, D), got shape {arr.shape}")
        arr = np.asarray(arr, np.float32)
        if self.normalize:
            n = np.linalg.norm(arr, axis=-1, keepdims=True)
            arr = np.where(n > 1e-8, arr / np.maximum(n, 1e-8), 0.0)
        return ViewFeatures(view.hw, dense=arr.astype(np.float16), meta={"source": "precomputed"})


def label_map_features(label_map: np.ndarray, num_classes: int, ignore_index: int | None = -1,
                       image_hw: tuple[int, int] | None = None) -> ViewFeatures:
    """A label map as label-space features: region id = class id, region feature = one-hot row.
    Labels outside [0, num_classes) and ``ignore_index`` mean no feature at that pixel."""
    lm = np.asarray(label_map)
    if lm.ndim != 2:
        raise ValueError(f"label map must be (H, W), got {lm.shape}")
    if image_hw is not None and tuple(lm.shape) != tuple(image_hw):
        H, W = image_hw
        ry = np.minimum((np.arange(H) + 0.5) * lm.shape[0] / H, lm.shape[0] - 1).astype(np.int64)
        rx = np.minimum((np.arange(W) + 0.5) * lm.shape[1] / W, lm.shape[1] - 1).astype(np.int64)
        lm = lm[ry[:, None], rx[None, :]]
    lm = lm.astype(np.int64)
    bad = (lm < 0) | (lm >= num_classes)
    if ignore_index is not None:
        bad |= lm == ignore_index
    regions = np.where(bad, -1, lm).astype(np.int32)
    return ViewFeatures(tuple(lm.shape), dense=None, regions=regions,
                        region_features=np.eye(num_classes, dtype=np.float16), blend=1.0,
                        meta={"source": "labels", "num_classes": int(num_classes)})


class PrecomputedLabels:
    """Per-view label maps from any 2D segmenter: ``<dir>/<view name>.png`` (8/16-bit) or .npy,
    resized (nearest) to the view; features live in the label space of ``class_names``."""

    def __init__(self, folder: str | os.PathLike, class_names: Sequence[str], ignore_index: int | None = -1):
        self.folder = Path(check_input_path(folder, want="dir"))
        self.encoder = LabelEncoder(class_names)
        self.ignore_index = ignore_index

    def encode(self, view: View) -> ViewFeatures:
        p = _find(self.folder, view.name, (".png", ".npy"))
        if p is None:
            raise InputError(self.folder, f"no label map for view {view.name!r} (expected {view.name}.png or .npy)")
        try:
            if p.suffix == ".npy":
                lm = np.load(p, allow_pickle=False)
            else:
                from PIL import Image
                lm = np.array(Image.open(p))
        except (OSError, ValueError) as exc:
            raise InputError(p, f"cannot read label map ({exc})") from None
        if lm.ndim == 3:
            lm = lm[..., 0]
        return label_map_features(lm, self.encoder.dim, self.ignore_index, image_hw=view.hw)
