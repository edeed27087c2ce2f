"""Distilled features for any cloud (no images), and the 2D-3D ensemble.

``predict`` averages the normalised per-point features of several voxelisations (rotations
about z and sub-voxel shifts) so that points sharing a voxel in one grid get distinct features.
``ensemble`` keeps, per point, the fused (2D) or distilled (3D) feature whose best class score
is higher, as OpenScene does; points no camera saw take the 3D feature.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from ..data import FeatureCloud, PointCloud
from ..errors import InputError
from .convert import load_openscene
from ..store import load_checkpoint
from .inputs import input_channels, tta_transform, voxelize_scene
from .model import MinkUNet, UNetSpec
from .sparse import SparseTensor
from .train import CKPT_FORMAT, select_device


@dataclass
class Distilled:
    """A trained model plus what prediction needs to rebuild its inputs and label its output."""

    model: MinkUNet
    voxel_size: float
    inputs: str
    encoder: str = ""
    class_names: list[str] | None = None
    source: str | None = None


def load_model(ckpt: str | os.PathLike | Distilled, *, voxel_size: float | None = None) -> Distilled:
    """A pc_ovseg distillation checkpoint, or an OpenScene MinkUNet18A checkpoint (colour input, 2 cm)."""
    if isinstance(ckpt, Distilled):
        return ckpt
    path = os.fspath(ckpt)
    ck = load_checkpoint(path, what="distillation checkpoint")
    if isinstance(ck, dict) and ck.get("format") == CKPT_FORMAT:
        try:
            model = MinkUNet(UNetSpec.from_dict(ck["spec"]))
            model.load_state_dict(ck["model"])
            if input_channels(ck["inputs"]) != model.spec.in_channels:
                raise ValueError(f"inputs {ck['inputs']!r} do not match the model's {model.spec.in_channels} channels")
            return Distilled(model.eval(), voxel_size or float(ck["voxel_size"]), ck["inputs"],
                             ck.get("encoder", ""), ck.get("class_names"), path)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise InputError(path, f"damaged pc_ovseg checkpoint ({type(exc).__name__}: "
                                   f"{(str(exc).splitlines() or [''])[0][:160]})") from None
    model = load_openscene(path, state=ck)  # raises InputError when it is not one either
    return Distilled(model, voxel_size or 0.02, "color", "", None, path)


@torch.no_grad()
def predict(ckpt: str | os.PathLike | Distilled, cloud: PointCloud, *, tta: int = 1,
            device: str | torch.device | None = None, voxel_size: float | None = None) -> FeatureCloud:
    """Per-point features predicted from geometry (and colour if the model takes it)."""
    if tta < 1:
        raise ValueError("tta must be >= 1")
    d = load_model(ckpt, voxel_size=voxel_size)
    if len(cloud) == 0:
        raise InputError(cloud.source, "cloud has no points")
    dev = select_device(device)
    model = d.model.to(dev).eval()
    acc = None
    for i in range(tta):
        rot, shift = tta_transform(i, tta)
        vs = voxelize_scene(cloud, d.voxel_size, d.inputs, transform=rot, shift=shift)
        coords = torch.from_numpy(np.concatenate([np.zeros((len(vs.coords), 1), np.int32), vs.coords], 1)).to(dev)
        with torch.autocast(dev.type, dtype=torch.float16, enabled=dev.type == "cuda"):
            out = model(SparseTensor(torch.from_numpy(vs.feats).to(dev), coords)).feats.float()
        out = torch.nn.functional.normalize(out, dim=1)[torch.from_numpy(vs.inverse).to(dev)]
        acc = out if acc is None else acc.add_(out)
    feats = torch.nn.functional.normalize(acc, dim=1).cpu().numpy().astype(np.float16)
    n = len(cloud)
    return FeatureCloud(cloud, feats, np.ones(n, np.float32), np.zeros(n, np.uint16), d.encoder, d.class_names,
                        {"distilled": d.source, "tta": tta, "voxel_size": d.voxel_size, "inputs": d.inputs})


def ensemble(fused: FeatureCloud, distilled: FeatureCloud, text_emb: np.ndarray, *, mode: str = "score"
             ) -> FeatureCloud:
    """Per point, the feature (2D fused or 3D distilled) whose best class score is higher
    (``mode="score"``, OpenScene's rule), or the 2D feature wherever a view saw the point and the
    3D one elsewhere (``mode="fill"``: for 2D features more reliable than the student's).

    ``text_emb`` (C, D) are the class text embeddings in the features' space.
    """
    if mode not in ("score", "fill"):
        raise ValueError(f"ensemble mode must be 'score' or 'fill', got {mode!r}")
    if len(fused.features) != len(distilled.features):
        raise ValueError(f"fused has {len(fused.features)} points, distilled {len(distilled.features)}")
    t = np.asarray(text_emb, np.float32)
    t = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    f2 = fused.features.astype(np.float32)
    f3 = distilled.features.astype(np.float32)
    s2 = _best_score(f2, t)
    s3 = _best_score(f3, t)
    use2d = fused.seen & (s2 >= s3) if mode == "score" else fused.seen.copy()
    feats = np.where(use2d[:, None], fused.features, distilled.features).astype(np.float16)
    weight = np.where(use2d, fused.weight, np.maximum(distilled.weight, 1e-6)).astype(np.float32)
    meta = {**fused.meta, "ensemble": {"fraction_2d": float(use2d.mean()) if len(use2d) else 0.0,
                                       "distilled": distilled.meta.get("distilled")}}
    return FeatureCloud(fused.cloud, feats, weight, fused.view_count, fused.encoder or distilled.encoder,
                        fused.class_names or distilled.class_names, meta)


def _best_score(f: np.ndarray, t: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    out = np.empty(len(f), np.float32)
    for a in range(0, len(f), chunk):
        out[a:a + chunk] = (f[a:a + chunk] @ t.T).max(1)
    return out
