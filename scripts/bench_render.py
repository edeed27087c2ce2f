#!/usr/bin/env python3
"""Benchmark the views kernels: 1M points -> 640x480 RGB + depth + index with hole filling.

The cloud is real: the back-projected depth of 7-Scenes redkitchen frames (1M points), viewed
from the pose of one of those frames. Reports the native splat + fill + colour gather time, the
one-off per-cloud spacing cost, the torch reference (1-pixel splat, no fill) and the hole
fraction of each. Run once; record the output in docs/views.md with machine and date.

    OMP_NUM_THREADS=2 PYTHONPATH=$PWD python scripts/bench_render.py [--data DIR] [--points N]
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
# idle OpenMP threads sleep instead of spinning: on a shared machine spinning steals the core the
# other thread needs (the default policy made 2 threads slower than 1 here)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pc_ovseg import native  # noqa: E402
from pc_ovseg.data import Camera, PointCloud  # noqa: E402
from pc_ovseg.views import reference  # noqa: E402
from pc_ovseg.views.render import render_view, splat_radius  # noqa: E402


def load_7scenes_points(root: Path, n: int) -> tuple[np.ndarray, np.ndarray, Camera]:
    from PIL import Image
    K = np.loadtxt(root / "camera-intrinsics.txt")
    xyz, rgb, cam = [], [], None
    for i in range(0, 1000, 30):
        stem = root / f"frame-{i:06d}"
        d = np.asarray(Image.open(f"{stem}.depth.png")).astype(np.float32)
        d[(d == 0) | (d == 65535)] = 0
        d /= 1000.0
        c = np.asarray(Image.open(f"{stem}.color.jpg").convert("RGB"))
        pose = np.loadtxt(f"{stem}.pose.txt")
        cam = cam or Camera(K, pose, 640, 480)
        r, cc = np.nonzero(d > 0)
        z = d[r, cc]
        pc = np.stack([(cc - K[0, 2]) / K[0, 0] * z, (r - K[1, 2]) / K[1, 1] * z, z], 1)
        xyz.append(pc @ pose[:3, :3].T + pose[:3, 3]); rgb.append(c[r, cc])
        if sum(map(len, xyz)) >= n:
            break
    xyz = np.concatenate(xyz)[:n].astype(np.float32); rgb = np.concatenate(rgb)[:n]
    return xyz, rgb, cam


CPU: list[float] = []


def timeit(fn, reps: int) -> float:
    """Median wall ms; the median process CPU ms goes to CPU[-1] (the machine is shared, so wall
    time includes waiting for a core; CPU time is the work itself, summed over threads)."""
    fn()
    wall, cpu = [], []
    for _ in range(reps):
        c = time.process_time(); t = time.perf_counter(); fn()
        wall.append(time.perf_counter() - t); cpu.append(time.process_time() - c)
    CPU.append(float(np.median(cpu)) * 1000)
    return float(np.median(wall)) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = Path(__file__).resolve().parents[1]
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("PC_OVSEG_SHARED_DATA", here.parent / "shared" / "data")))
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    xyz, rgb, cam0 = load_7scenes_points(args.data / "7scenes-redkitchen", args.points)
    # step back 0.8 m and up 0.3 m from the first frame's pose: a view that no single frame had,
    # where 1-pixel points leave holes and far surfaces show through near ones
    pose = cam0.cam_to_world.copy()
    pose[:3, 3] += -0.8 * pose[:3, 2] - 0.3 * pose[:3, 1]
    cam = Camera(cam0.K, pose, cam0.width, cam0.height)
    cloud = PointCloud(xyz, rgb)
    print(f"machine: {platform.machine()} {os.cpu_count()} cpus, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, "
          f"openmp={native.HAS_OPENMP}; points={len(xyz):,}; image {cam.width}x{cam.height}")
    t = time.perf_counter(); radius = splat_radius(cloud); t_sp = (time.perf_counter() - t) * 1000
    print(f"per-cloud kNN spacing (once per cloud, cached): {t_sp:.0f} ms")

    def native_full():
        depth, index = native.splat(xyz, cam, radius=radius, fill_iters=2)
        img = np.full((cam.height, cam.width, 3), 255, np.uint8)
        m = index >= 0
        img[m] = rgb[index[m]]
        return depth, index, img

    def native_plain():
        return native.splat(xyz, cam)

    t_full = timeit(native_full, args.reps)
    t_plain = timeit(native_plain, args.reps)
    xt = torch.from_numpy(xyz)
    t_torch = timeit(lambda: reference.splat_points(xt, cam), args.reps)
    t_view = timeit(lambda: render_view(cloud, cam), max(3, args.reps // 2))
    d_full, _, _ = native_full()
    d_plain, _ = native_plain()
    d_t, _ = reference.splat_points(xt, cam)
    t_dt = timeit(lambda: native.depth_test(xyz, cam, d_full, rel_tol=0.01, abs_tol=0.02), args.reps)
    t_dt_torch = timeit(lambda: reference.depth_test(xt, cam, torch.from_numpy(d_full), rel_tol=0.01, abs_tol=0.02), args.reps)
    c_full, c_plain, c_torch, c_view, c_dt, c_dt_torch = CPU
    print(f"native splat + hole fill + RGB gather (RGB + depth + index): {t_full:.1f} ms wall, {c_full:.1f} ms CPU, "
          f"empty pixels {np.mean(d_full == 0):.1%}")
    print(f"native 1-pixel splat, no fill: {t_plain:.1f} ms wall, {c_plain:.1f} ms CPU, empty {np.mean(d_plain == 0):.1%}")
    print(f"torch reference 1-pixel splat: {t_torch:.1f} ms wall, {c_torch:.1f} ms CPU, empty {np.mean(d_t.numpy() == 0):.1%}"
          f"  -> native speed-up {t_torch / t_plain:.1f}x wall (same work)")
    print(f"depth test: native {t_dt:.1f} ms wall ({c_dt:.1f} CPU), torch {t_dt_torch:.1f} ms wall ({c_dt_torch:.1f} CPU)"
          f" -> {t_dt_torch / t_dt:.1f}x")
    print(f"render_view (splat + fill + colour + depth-test visibility): {t_view:.1f} ms wall, {c_view:.1f} ms CPU")


if __name__ == "__main__":
    main()
