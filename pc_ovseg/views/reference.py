"""Torch reference implementations of the native views kernels (tests compare against them).

Plain scatter-min z-buffer and depth test, written for clarity; they also run on CUDA tensors.
"""
from __future__ import annotations

import numpy as np
import torch

from ..data import Camera


def _project(xyz: torch.Tensor, camera: Camera):
    w2c = torch.as_tensor(np.linalg.inv(camera.cam_to_world), dtype=torch.float64, device=xyz.device)
    pc = xyz.double() @ w2c[:3, :3].T + w2c[:3, 3]
    z = pc[:, 2]
    K = camera.K
    u = K[0, 0] * pc[:, 0] / z + K[0, 2]
    v = K[1, 1] * pc[:, 1] / z + K[1, 2]
    return torch.floor(v + 0.5), torch.floor(u + 0.5), z


def splat_points(xyz: torch.Tensor, camera: Camera, near: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """1-pixel z-buffer: nearest point per pixel (ties: lower index). -> depth (H,W), index (H,W)."""
    H, W = camera.height, camera.width
    row, col, z = _project(xyz, camera)
    ok = (z > near) & (row >= 0) & (col >= 0) & (row < H) & (col < W)
    ids = torch.nonzero(ok).squeeze(1)
    zf = z[ok].float()
    key = (zf.view(torch.int32).long() << 32) | ids
    pix = (row[ok] * W + col[ok]).long()
    buf = torch.full((H * W,), torch.iinfo(torch.int64).max, dtype=torch.int64, device=xyz.device)
    buf.scatter_reduce_(0, pix, key, reduce="amin")
    empty = buf == torch.iinfo(torch.int64).max
    depth = (buf >> 32).int().view(torch.float32)
    depth = torch.where(empty, torch.zeros_like(depth), depth)
    index = torch.where(empty, torch.full_like(buf, -1), buf & 0xFFFFFFFF)
    return depth.view(H, W), index.view(H, W)


def depth_test(xyz: torch.Tensor, camera: Camera, depth: torch.Tensor, *, rel_tol: float, abs_tol: float,
               border: int = 0, near: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Visible point ids and their (row, col) pixels, as native.depth_test."""
    H, W = depth.shape
    row, col, z = _project(xyz, camera)
    ok = (z > near) & (row >= border) & (col >= border) & (row < H - border) & (col < W - border)
    ids = torch.nonzero(ok).squeeze(1)
    r, c = row[ok].long(), col[ok].long()
    d = depth[r, c].double()
    tol = torch.clamp(rel_tol * d, min=abs_tol)
    vis = (d > 0) & ((d - z[ok]).abs() <= tol)
    return ids[vis], torch.stack([r[vis], c[vis]], 1).int()
