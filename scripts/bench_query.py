#!/usr/bin/env python3
"""Query latency on a large fused cloud: time from an embedded text to a full heatmap / labels.

    python scripts/bench_query.py [--points 1000000] [--dim 512] [--threads 2] --json
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    import torch
    torch.set_num_threads(a.threads)
    from pc_ovseg.data import FeatureCloud, PointCloud
    from pc_ovseg.query import CANONICAL_NEGATIVES, QueryEngine

    rng = np.random.default_rng(0)
    f = rng.standard_normal((a.points, a.dim), dtype=np.float32)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    fc = FeatureCloud(PointCloud(rng.random((a.points, 3), dtype=np.float32) * 20), f.astype(np.float16),
                      np.ones(a.points, np.float32), np.ones(a.points, np.uint16), "bench")
    del f
    t = time.perf_counter()
    eng = QueryEngine(fc)
    setup = time.perf_counter() - t
    vocab = ["wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
             "picture", "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink",
             "bathtub", "other furniture"]
    for text in vocab + ["query"] + list(CANONICAL_NEGATIVES):  # texts embedded beforehand
        e = rng.standard_normal(a.dim).astype(np.float32)
        eng._text_cache[text] = e / np.linalg.norm(e)
    heat, labels = [], []
    for _ in range(a.repeats):
        t = time.perf_counter(); eng.heatmap("query"); heat.append(time.perf_counter() - t)
        t = time.perf_counter(); eng.labels(vocab); labels.append(time.perf_counter() - t)
    out = {"points": a.points, "dim": a.dim, "threads": a.threads, "setup_s": round(setup, 3),
           "heatmap_s": round(float(np.median(heat)), 4), "labels20_s": round(float(np.median(labels)), 4),
           "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "torch": torch.__version__,
           "date": time.strftime("%Y-%m-%d")}
    print(json.dumps(out) if a.json else out)


if __name__ == "__main__":
    main()
