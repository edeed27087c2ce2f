"""Clouds -> voxel inputs for the U-Net: input features, augmentation, voxelisation, batching.

The same code path serves training (random augmentation) and prediction (fixed test-time
transforms), so a model sees identically built inputs in both.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .. import native
from ..data import PointCloud
from ..errors import InputError

#: default voxel sizes (metres) as in OpenScene (indoor) and LiDAR practice (outdoor)
VOXEL_SIZE = {"indoor": 0.02, "outdoor": 0.05}


def _ones(cloud: PointCloud) -> np.ndarray:
    return np.ones((len(cloud), 1), np.float32)


def _height(cloud: PointCloud) -> np.ndarray:
    z = cloud.xyz[:, 2]
    base = np.percentile(z, 2) if len(z) else 0.0
    return (z - base).astype(np.float32)[:, None]


def _z(cloud: PointCloud) -> np.ndarray:
    """z as it is (metres in the cloud's frame): for a LiDAR scan in the sensor frame, height
    relative to the sensor, the same in every crop and scan (unlike ``height``, which is relative to
    the 2nd-percentile floor of whatever cloud it is given)."""
    return cloud.xyz[:, 2:3].astype(np.float32)


def _color(cloud: PointCloud) -> np.ndarray:
    if cloud.rgb is None:
        raise InputError(cloud.source, "the model takes colour input but this cloud has no colour")
    return cloud.rgb.astype(np.float32) / 255.0 - 0.5


def _normals(cloud: PointCloud) -> np.ndarray:
    """|n_z| of the unit normal (verticality: 1 on floors/roads, 0 on walls), rotation-invariant
    about z so augmentation needs no normal rotation; the cloud's normals or kNN PCA ones."""
    n = cloud.normals
    if n is None:
        from ..geometry import estimate_normals
        n = estimate_normals(cloud.xyz) if len(cloud) >= 3 else np.tile([0, 0, 1], (len(cloud), 1))
    n = np.asarray(n, np.float32)
    return np.abs(n[:, 2:3] / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12))


#: input feature name -> (channels, fn(cloud) -> (N, channels) float32); geometry-only: ones/height
INPUT_FEATURES: dict[str, tuple[int, Callable[[PointCloud], np.ndarray]]] = {
    "ones": (1, _ones),
    "height": (1, _height),
    "z": (1, _z),
    "color": (3, _color),
    "normals": (1, _normals),
}


def input_channels(inputs: str) -> int:
    return sum(INPUT_FEATURES[name][0] for name in parse_inputs(inputs))


def parse_inputs(inputs: str) -> list[str]:
    names = [s for s in inputs.replace("+", ",").split(",") if s]
    for n in names:
        if n not in INPUT_FEATURES:
            raise ValueError(f"unknown input feature {n!r}; choose from {sorted(INPUT_FEATURES)}")
    return names


def point_inputs(cloud: PointCloud, inputs: str) -> np.ndarray:
    return np.concatenate([INPUT_FEATURES[n][1](cloud) for n in parse_inputs(inputs)], 1)


@dataclass
class Augment:
    """Training augmentation: rotation about the up (z) axis, scaling, flips, jitter, grid shift."""

    rotate: bool = True
    scale: tuple[float, float] = (0.9, 1.1)
    flip: bool = True
    jitter: float = 0.01      # std of point jitter, metres (clipped at 3 std)

    def transform(self, rng: np.random.Generator) -> np.ndarray:
        a = rng.uniform(0, 2 * np.pi) if self.rotate else 0.0
        c, s = np.cos(a), np.sin(a)
        m = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], np.float64)
        m *= rng.uniform(*self.scale)
        if self.flip:
            m = m @ np.diag([rng.choice([-1, 1]), rng.choice([-1, 1]), 1.0])
        return m


def tta_transform(i: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The i-th of n test-time transforms: rotation by 2*pi*i/n about z plus a sub-voxel shift."""
    a = 2 * np.pi * i / max(n, 1)
    c, s = np.cos(a), np.sin(a)
    shift = np.array([0.5, 0.25, 0.5]) * (i / max(n, 1))  # in voxels
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], np.float64), shift


@dataclass
class VoxelScene:
    """One voxelised cloud: voxel coords, per-voxel inputs, the point->voxel map, optional targets."""

    coords: np.ndarray               # (M, 3) int32
    feats: np.ndarray                # (M, C) float32, mean of point inputs
    inverse: np.ndarray              # (N,) int64
    target: np.ndarray | None = None  # (M, D) float32 L2-normalised mean of seen point features
    valid: np.ndarray | None = None   # (M,) bool voxels with a target
    labels: np.ndarray | None = None  # (M,) int64 majority GT label of the voxel's points, -1 none


def voxelize_scene(cloud: PointCloud, voxel_size: float, inputs: str, *, transform: np.ndarray | None = None,
                   shift: np.ndarray | None = None, jitter: float = 0.0, rng: np.random.Generator | None = None,
                   features: np.ndarray | None = None, seen: np.ndarray | None = None,
                   labels: np.ndarray | None = None) -> VoxelScene:
    """Transform (3x3, about the cloud's centre), jitter, voxelise; average inputs (and targets) per
    voxel; ``labels`` (per point, -1 = none) give each voxel its majority label."""
    xyz = cloud.xyz.astype(np.float64)
    centre = (xyz.min(0) + xyz.max(0)) / 2 if len(xyz) else np.zeros(3)
    xyz = xyz - centre
    if transform is not None:
        xyz = xyz @ transform.T
    if jitter > 0 and rng is not None:
        xyz = xyz + np.clip(rng.normal(0, jitter, xyz.shape), -3 * jitter, 3 * jitter)
    if shift is not None:
        xyz = xyz + np.asarray(shift) * voxel_size
    coords, inverse, _, counts = native.voxelize(xyz, voxel_size)
    pin = point_inputs(cloud, inputs)
    feats = _segment_mean(pin, inverse, len(coords), counts)
    scene = VoxelScene(coords, feats, inverse)
    if features is not None:
        s = np.ones(len(cloud), bool) if seen is None else np.asarray(seen, bool)
        m = len(coords)
        n_seen = np.bincount(inverse[s], minlength=m)
        t = np.zeros((m, features.shape[1]), np.float32)
        _index_add(t, inverse[s], features[s])
        norm = np.linalg.norm(t, axis=1, keepdims=True)
        scene.valid = (n_seen > 0) & (norm[:, 0] > 0)
        scene.target = np.divide(t, norm, out=np.zeros_like(t), where=norm > 0)
    if labels is not None:
        scene.labels = voxel_majority(np.asarray(labels).reshape(-1), inverse, len(coords))
    return scene


def voxel_majority(labels: np.ndarray, inverse: np.ndarray, m: int) -> np.ndarray:
    """(m,) int64: the most frequent label >= 0 among each voxel's points, -1 where none has one."""
    keep = labels >= 0
    out = np.full(m, -1, np.int64)
    if not keep.any():
        return out
    lab, inv = labels[keep].astype(np.int64), inverse[keep].astype(np.int64)
    C = int(lab.max()) + 1
    counts = np.bincount(inv * C + lab, minlength=m * C).reshape(m, C)
    has = counts.sum(1) > 0
    out[has] = counts[has].argmax(1)
    return out


def _index_add(out: np.ndarray, idx: np.ndarray, src: np.ndarray) -> None:
    t = torch.from_numpy(out)
    t.index_add_(0, torch.from_numpy(np.ascontiguousarray(idx, np.int64)), torch.from_numpy(np.asarray(src, np.float32)))


def _segment_mean(values: np.ndarray, inverse: np.ndarray, m: int, counts: np.ndarray) -> np.ndarray:
    out = np.zeros((m, values.shape[1]), np.float32)
    _index_add(out, inverse, values)
    return out / counts[:, None].astype(np.float32)


def collate(scenes: list[VoxelScene], device) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Batch coords (M,4) int32 with the batch index first, inputs (M,C) and per-scene row offsets."""
    coords, feats, starts = [], [], [0]
    for b, s in enumerate(scenes):
        coords.append(np.concatenate([np.full((len(s.coords), 1), b, np.int32), s.coords], 1))
        feats.append(s.feats)
        starts.append(starts[-1] + len(s.coords))
    return (torch.from_numpy(np.concatenate(coords)).to(device), torch.from_numpy(np.concatenate(feats)).to(device),
            starts)
