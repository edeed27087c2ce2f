#!/usr/bin/env python3
"""Peak memory of dataset distillation vs the number of scenes: it should stay flat.

    python scripts/bench_distill_rss.py [--scenes 5,10,20] [--dim 64] [--scans-per-scene 2] --json

Writes N fused scenes to a temp dir (each = ``--scans-per-scene`` real SemanticKITTI scans from
../shared/data, randomly rotated and placed side by side, with ``--dim``-d float16 features), then
for each N runs ``backbone.dataset.train_dataset`` in a fresh process over every scene once
(``steps_per_epoch = N``, random 20k-point crops, one prefetch thread) and reports that process's
peak RSS (``ru_maxrss``). Prints one JSON object: per N the peak MB, steps and scene bytes on disk,
and ``ratio`` = peak(max N) / peak(min N).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCANS = ["points_000000.npy", "points_000001.npy", "points_000002.npy", "points_seq00_000000.npy"]
LABELS = ["labels_000000.npy", "labels_000001.npy", "labels_000002.npy", "labels_seq00_000000.npy"]


def shared_dir() -> Path:
    env = os.environ.get("PC_OVSEG_SHARED_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def write_scenes(out: Path, n: int, dim: int, per_scene: int, seed: int = 0) -> int:
    from pc_ovseg.data import FeatureCloud, PointCloud
    d = shared_dir() / "semantickitti"
    scans = [(np.load(d / s), np.load(d / lab).reshape(-1)) for s, lab in zip(SCANS, LABELS)]
    rng = np.random.default_rng(seed)
    proj = rng.normal(size=(20, dim)).astype(np.float32)
    proj /= np.linalg.norm(proj, axis=1, keepdims=True)
    total = 0
    for i in range(n):
        xyz_all, lab_all = [], []
        for k in range(per_scene):
            xyz, lab = scans[int(rng.integers(len(scans)))]
            a = rng.uniform(0, 2 * np.pi)
            c, s = np.cos(a), np.sin(a)
            xyz = xyz @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], np.float32).T + np.array([120.0 * k, 0, 0], np.float32)
            xyz_all.append(xyz)
            lab_all.append(lab)
        xyz, lab = np.concatenate(xyz_all), np.concatenate(lab_all)
        seen = lab > 0
        feats = (proj[lab] * seen[:, None]).astype(np.float16)
        fc = FeatureCloud(PointCloud(xyz, fields={"label": lab.astype(np.int32)}), feats, seen.astype(np.float32),
                          seen.astype(np.uint16), "synthetic")
        p = out / f"scene{i:03d}.npz"
        fc.save(p)
        total += p.stat().st_size
    return total


def child(scene_dir: str, steps: int, budget: int) -> None:
    import torch
    torch.set_num_threads(1)
    from pc_ovseg.backbone.dataset import CropConfig, train_dataset
    tiny = dict(planes=(16, 16, 32, 32, 16, 16, 16, 16), init_dim=16, init_kernel=3)
    t = time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        r = train_dataset(scene_dir, Path(tmp) / "m.pt", epochs=1, steps_per_epoch=steps, voxel_size=0.05,
                          crop=CropConfig(point_budget=budget), model_overrides=tiny, device="cpu", progress=False)
    print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "steps": r.steps,
                      "cpu_s": round(time.process_time() - t, 1)}))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", default="5,10,20")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--scans-per-scene", type=int, default=2)
    ap.add_argument("--point-budget", type=int, default=20000)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]), int(args.child[2]))
        return 0
    counts = [int(v) for v in args.scenes.split(",")]
    out = {"scenes": {}, "dim": args.dim, "scans_per_scene": args.scans_per_scene, "point_budget": args.point_budget}
    with tempfile.TemporaryDirectory(prefix="bench_distill_rss_") as tmp:
        for n in counts:
            d = Path(tmp) / f"n{n}"
            d.mkdir()
            size = write_scenes(d, n, args.dim, args.scans_per_scene)
            env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
            proc = subprocess.run([sys.executable, __file__, "--child", str(d), str(n), str(args.point_budget)],
                                  capture_output=True, text=True, env=env)
            if proc.returncode:
                print(proc.stderr[-2000:], file=sys.stderr)
                return 1
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            out["scenes"][str(n)] = {**r, "disk_mb": round(size / 2 ** 20, 1)}
            for p in d.iterdir():  # keep the temp dir small: one N at a time
                p.unlink()
    peaks = [out["scenes"][str(n)]["peak_mb"] for n in counts]
    out["ratio"] = round(peaks[-1] / peaks[0], 4)
    print(json.dumps(out) if args.json else f"peak RSS {dict(zip(counts, peaks))} MB, ratio {out['ratio']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
