#!/usr/bin/env python3
"""Voxelisation speed: native (pc_ovseg._native) vs NumPy (np.unique) vs torch (torch.unique).

All produce the same thing: unique voxels of floor(xyz / voxel_size) in order of first
appearance, the point->voxel map and counts. Run once; record the output in docs/io.md.
    OMP_NUM_THREADS=2 python scripts/bench_voxel.py [--points 2000000] [--voxel 0.05]
"""
from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402


def first_order(first, inverse):
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return order, rank[inverse]


def numpy_axis0(xyz, v):
    c = np.floor(xyz.astype(np.float64) / v).astype(np.int32)
    u, first, inv, cnt = np.unique(c, axis=0, return_index=True, return_inverse=True, return_counts=True)
    order, inv = first_order(first, inv.reshape(-1))
    return u[order], inv, first[order], cnt[order]


def numpy_packed(xyz, v):
    c = np.floor(xyz.astype(np.float64) / v).astype(np.int64)
    c -= c.min(0)
    key = (c[:, 0] << 42) | (c[:, 1] << 21) | c[:, 2]
    _, first, inv, cnt = np.unique(key, return_index=True, return_inverse=True, return_counts=True)
    order, inv = first_order(first, inv)
    return None, inv, first[order], cnt[order]


def torch_packed(xyz, v, device):
    import torch
    p = torch.as_tensor(xyz, device=device)
    c = torch.floor(p.double() / v).long()
    c -= c.min(0).values
    key = (c[:, 0] << 42) | (c[:, 1] << 21) | c[:, 2]
    _, inv, cnt = torch.unique(key, return_inverse=True, return_counts=True)
    n = len(key)
    first = torch.full((len(cnt),), n, dtype=torch.long, device=device)
    first.scatter_reduce_(0, inv, torch.arange(n, device=device), reduce="amin")
    order = torch.argsort(first)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=device)
    out = None, rank[inv], first[order], cnt[order]
    if device != "cpu":
        torch.cuda.synchronize()
    return out


def timed(fn, repeat):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=2_000_000)
    ap.add_argument("--voxel", type=float, default=0.05)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    import torch
    from pc_ovseg import native
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    rng = np.random.default_rng(0)
    # a room-sized scan: 2M points in 20 x 20 x 4 m, surface-like (clustered) distribution
    centres = rng.random((4000, 3)) * [20, 20, 4]
    xyz = (centres[rng.integers(0, len(centres), a.points)] + rng.normal(0, 0.15, (a.points, 3))).astype(np.float32)
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs, {platform.processor() or platform.platform()}; "
          f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, native OpenMP={native.HAS_OPENMP}, torch {torch.__version__}")
    t_nat, ref = timed(lambda: native.voxelize(xyz, a.voxel), a.repeat)
    print(f"{a.points:,} points, voxel {a.voxel} m -> {len(ref[0]):,} voxels")
    rows = [("native voxelize (C++ hash)", t_nat, ref)]
    rows.append(("numpy np.unique(axis=0)",) + timed(lambda: numpy_axis0(xyz, a.voxel), 1))
    rows.append(("numpy np.unique(packed int64)",) + timed(lambda: numpy_packed(xyz, a.voxel), a.repeat))
    rows.append(("torch.unique(packed) cpu",) + timed(lambda: torch_packed(xyz, a.voxel, "cpu"), a.repeat))
    if torch.cuda.is_available():
        torch_packed(xyz, a.voxel, "cuda")
        rows.append(("torch.unique(packed) cuda",) + timed(lambda: torch_packed(xyz, a.voxel, "cuda"), a.repeat))
    for name, t, out in rows:
        inv = out[1] if not hasattr(out[1], "cpu") else out[1].cpu().numpy()
        same = np.array_equal(inv, ref[1])
        print(f"  {name:32s} {t:8.3f} s  {t / t_nat:6.1f}x native  same result: {same}")


if __name__ == "__main__":
    main()
