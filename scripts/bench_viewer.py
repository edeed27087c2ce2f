#!/usr/bin/env python3
"""Viewer query latency: HTTP round trip of /api/heatmap, /api/labels and /api/pick.

A synthetic result of N points with D-dimensional L2-normalised features in a label space of D
class names (so a class name is a text embedding without CLIP weights; the per-query cost, an
(N x D) x (D x T) matmul plus relevancy, is the same as for D-dim CLIP features).

    OMP_NUM_THREADS=2 python scripts/bench_viewer.py --points 1000000 --dim 512
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
import urllib.request

import numpy as np
import torch

from pc_ovseg.data import FeatureCloud, PointCloud
from pc_ovseg.viewer import ViewerScene, start_server


def post(url: str, body: dict) -> bytes:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return r.read()


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-display-points", type=int, default=2_000_000)
    args = ap.parse_args()
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    n, d = args.points, args.dim
    feats = rng.standard_normal((n, d), dtype=np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    names = [f"class {i}" for i in range(d)]
    fc = FeatureCloud(PointCloud(rng.uniform(-10, 10, (n, 3)).astype(np.float32)), feats.astype(np.float16),
                      np.ones(n, np.float32), np.ones(n, np.uint16), "labels", names)
    del feats
    scene = ViewerScene.from_feature_cloud(fc, max_display_points=args.max_display_points)
    t0 = time.perf_counter()
    scene.prepare()
    prep = (time.perf_counter() - t0) * 1e3
    srv = start_server(scene)
    base = srv.url.rstrip("/")
    try:
        queries = iter(names * 4)
        heat = timed(lambda: post(base + "/api/heatmap", {"query": next(queries)}), args.repeats)
        vocab = names[:20]
        labels = timed(lambda: post(base + "/api/labels", {"vocabulary": vocab}), args.repeats)
        pick = timed(lambda: post(base + "/api/pick", {"index": 12345, "vocabulary": vocab}), args.repeats)
        t0 = time.perf_counter()
        with urllib.request.urlopen(base + "/api/positions", timeout=120) as r:
            size = len(r.read())
        pos_ms = (time.perf_counter() - t0) * 1e3
    finally:
        srv.shutdown()
        srv.server_close()
    print(f"points {n:,}  dim {d}  displayed {scene.n_display:,}  torch threads {torch.get_num_threads()}  device {scene.engine.device}")
    print(f"prepare (engine + first query): {prep:.0f} ms")
    for name, ms in (("heatmap (new query text)", heat), ("labels (20 names)", labels), ("pick (top-5)", pick)):
        print(f"{name:28s} median {statistics.median(ms):7.1f} ms  max {max(ms):7.1f} ms")
    print(f"{'positions stream':28s} {pos_ms:7.1f} ms for {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
