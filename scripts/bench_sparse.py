#!/usr/bin/env python3
"""Train-step time and peak memory of the MinkUNet on one ~118k-voxel input: native backend vs spconv.

    python scripts/bench_sparse.py [--input room|kitti] [--arch MinkUNet18A] [--steps 3] --json

Timing alternates steps of the backends in one process (a shared machine's load drift hits both
alike; median of --steps after one warm-up each). Peak memory comes from one subprocess per
backend (CPU: peak RSS growth over the state after model and data creation, one step; CUDA:
max allocated). A step is: build the
sparse input (kernel maps are rebuilt every step, as in training), forward, cosine loss against
a random target, backward, AdamW step.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np


def synthetic_room(target_voxels: int = 118_000, voxel: float = 0.02, seed: int = 0) -> np.ndarray:
    """Surface points of a furnished box room (floor, ceiling, walls, tables, boxes) at ~2 points/voxel."""
    rng = np.random.default_rng(seed)
    # room 3.5 x 2.7 x 2.1 m plus furniture surfaces: ~118k voxels at 2 cm
    L, W, H = 3.5, 2.7, 2.1
    quads = [((0, 0, 0), (L, 0, 0), (0, W, 0)), ((0, 0, H), (L, 0, 0), (0, W, 0)),
             ((0, 0, 0), (L, 0, 0), (0, 0, H)), ((0, W, 0), (L, 0, 0), (0, 0, H)),
             ((0, 0, 0), (0, W, 0), (0, 0, H)), ((L, 0, 0), (0, W, 0), (0, 0, H))]
    for _ in range(6):  # boxes: top and four sides
        x, y = rng.uniform(0.2, L - 1.0), rng.uniform(0.2, W - 1.0)
        a, b, h = rng.uniform(0.3, 0.8), rng.uniform(0.3, 0.8), rng.uniform(0.3, 0.8)
        quads += [((x, y, h), (a, 0, 0), (0, b, 0)), ((x, y, 0), (a, 0, 0), (0, 0, h)),
                  ((x, y + b, 0), (a, 0, 0), (0, 0, h)), ((x, y, 0), (0, b, 0), (0, 0, h)),
                  ((x + a, y, 0), (0, b, 0), (0, 0, h))]
    pts = []
    for o, u, v in quads:
        o, u, v = map(np.asarray, (o, u, v))
        area = np.linalg.norm(np.cross(u, v))
        n = int(2 * area / voxel ** 2)
        s, t = rng.uniform(size=(2, n))
        pts.append(o + s[:, None] * u + t[:, None] * v)
    return np.concatenate(pts).astype(np.float32)


def load_input(name: str) -> tuple[np.ndarray, float]:
    if name == "room":
        return synthetic_room(), 0.02
    root = os.environ.get("PC_OVSEG_SHARED_DATA", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
    return np.load(os.path.join(root, "semantickitti", "points_000000.npy")), 0.05


def worker(args) -> dict:
    """``--worker time``: alternate steps of every backend in one process (so load drift on a
    shared machine hits both alike); ``--worker mem``: one backend, one step, peak memory."""
    import torch
    torch.set_num_threads(args.threads)
    from pc_ovseg import native
    from pc_ovseg.backbone.model import MinkUNet, unet_spec
    from pc_ovseg.backbone.sparse import SparseTensor

    dev = torch.device(args.device)
    xyz, voxel = load_input(args.input)
    coords, _, _, _ = native.voxelize(xyz, voxel)
    coords = torch.from_numpy(np.concatenate([np.zeros((len(coords), 1), np.int32), coords], 1))
    torch.manual_seed(0)
    model = MinkUNet(unet_spec(args.arch, in_channels=3, out_channels=args.out_channels)).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    feats = torch.randn(len(coords), 3)
    target = torch.nn.functional.normalize(torch.randn(len(coords), args.out_channels), dim=1).to(dev)
    backends = args.backends.split(",")

    def step(backend: str) -> tuple[float, float]:
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        x = SparseTensor(feats.to(dev), coords.to(dev), backend=backend)
        y = model(x).feats
        loss = (1 - torch.nn.functional.cosine_similarity(y, target, dim=1)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0, float(loss)

    info = {"voxels": len(coords), "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2)}
    if args.worker == "mem":
        rss0 = _rss_mb()
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t, loss = step(backends[0])
        peak = (torch.cuda.max_memory_allocated() / 2 ** 20) if dev.type == "cuda" else _rss_mb() - rss0
        return {**info, "backend": backends[0], "peak_mem_mb": round(peak, 1), "step_s": round(t, 3)}
    times: dict[str, list[float]] = {b: [] for b in backends}
    losses: dict[str, float] = {}
    for _ in range(args.steps + 1):
        for b in backends:
            t, losses[b] = step(b)
            times[b].append(t)
    return {**info, "backends": {b: {"first_step_s": round(v[0], 3), "step_s": round(float(np.median(v[1:])), 3),
                                     "best_step_s": round(float(np.min(v[1:])), 3),
                                     "steps_s": [round(x, 3) for x in v[1:]], "last_loss": losses[b]}
                                 for b, v in times.items()}}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", default="room", choices=["room", "kitti"],
                    help="room: synthetic furnished room at 2 cm; kitti: the SemanticKITTI scan at 5 cm")
    ap.add_argument("--arch", default="MinkUNet18A")
    ap.add_argument("--out-channels", type=int, default=512)
    ap.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    ap.add_argument("--backends", default="native,spconv")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cuda" if _has_cuda() else "cpu")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    backends = []
    skipped = {}
    for b in args.backends.split(","):
        if b == "spconv":
            try:
                import spconv.pytorch  # noqa: F401
            except ImportError:
                skipped[b] = "spconv not installed"
                continue
        backends.append(b)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    passthru = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--json"]

    def run(kind: str, bk: list[str]) -> dict:
        cmd = [sys.executable, __file__, *passthru, "--worker", kind, "--backends", ",".join(bk)]
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if p.returncode:
            return {"error": (p.stderr.strip().splitlines() or ["failed"])[-1]}
        return json.loads(p.stdout.strip().splitlines()[-1])

    timing = run("time", backends)
    memory = {b: run("mem", [b]) for b in backends}
    results = {b: {**timing.get("backends", {}).get(b, {}), "peak_mem_mb": memory[b].get("peak_mem_mb"),
                   **({"error": timing["error"]} if "error" in timing else {})} for b in backends}
    summary = {"input": args.input, "voxels": timing.get("voxels"), "arch": args.arch,
               "params_m": timing.get("params_m"), "out_channels": args.out_channels, "device": args.device,
               "threads": args.threads, "results": results, "skipped": skipped}
    ok = {b: r for b, r in results.items() if r.get("step_s")}
    if "native" in ok and "spconv" in ok:
        summary["time_ratio_native_over_spconv"] = round(ok["native"]["step_s"] / ok["spconv"]["step_s"], 3)
        summary["best_time_ratio_native_over_spconv"] = round(ok["native"]["best_step_s"] / ok["spconv"]["best_step_s"], 3)
        if ok["spconv"].get("peak_mem_mb"):
            summary["mem_ratio_native_over_spconv"] = round(ok["native"]["peak_mem_mb"] / ok["spconv"]["peak_mem_mb"], 3)
    if args.json:
        print(json.dumps(summary))
    else:
        for b, r in results.items():
            print(b, r)
        print({k: v for k, v in summary.items() if k != "results"})
    return 0


def _has_cuda() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:
        return False


if __name__ == "__main__":
    sys.exit(main())
