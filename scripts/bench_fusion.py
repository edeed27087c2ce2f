#!/usr/bin/env python3
"""Fusion memory and speed: peak memory over the size of the fused result itself.

    python scripts/bench_fusion.py [--points 2000000] [--dim 512] [--views 20] --json

Synthetic views (each sees a random 10 % of the points, low-res dense features + regions, as
the encoders produce) are streamed through FeatureFusion exactly as the pipeline does.
"""
from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=2_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--views", type=int, default=20)
    ap.add_argument("--segments", type=float, default=0.5, help="FusionConfig.segments (default 0.5; 0 = off)")
    ap.add_argument("--mask-check", type=float, default=2.0, help="FusionConfig.mask_check (0 = one pass, no check)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    from pc_ovseg.data import PointCloud, ViewFeatures
    from pc_ovseg.fusion import FeatureFusion, FusionConfig, Visibility

    rng = np.random.default_rng(0)
    cloud = PointCloud(rng.random((a.points, 3), dtype=np.float32) * 20)
    H, W = 480, 640
    m = a.points // 10
    base = rss_mb()
    t0 = time.perf_counter()
    fusion = FeatureFusion(a.points, a.dim, FusionConfig(segments=a.segments, mask_check=a.mask_check))
    vis_list = []
    for v in range(a.views):
        ids = rng.choice(a.points, m, replace=False)
        pix = np.stack([rng.integers(0, H, m), rng.integers(0, W, m)], 1).astype(np.int32)
        vis = Visibility(f"v{v}", ("scene", "mid", "close")[v % 3], ids, pix, rng.random(m, dtype=np.float32), (H, W))
        fusion.add_weights(vis)
        vis_list.append(vis)
    regions = (np.arange(H * W).reshape(H, W) // 1600).astype(np.int32)

    def views():  # each pass sees the same features again (as from the pipeline's cache)
        for v, vis in enumerate(vis_list):
            r = np.random.default_rng(1000 + v)
            yield vis, ViewFeatures((H, W), dense=r.standard_normal((30, 40, a.dim)).astype(np.float16),
                                    regions=regions,
                                    region_features=r.standard_normal((int(regions.max()) + 1, a.dim)).astype(np.float16))

    fusion.fuse_views(views)
    t_acc = time.perf_counter() - t0
    fc = fusion.result(cloud, encoder="bench")
    total = time.perf_counter() - t0
    result_mb = fc.features.nbytes / 2 ** 20
    out = {"points": a.points, "dim": a.dim, "views": a.views, "visible_per_view": m,
           "result_features_mb": round(result_mb), "peak_rss_over_start_mb": round(peak_mb() - base),
           "peak_over_result": round((peak_mb() - base) / result_mb, 2),
           "accumulate_s": round(t_acc, 2), "total_s": round(total, 2), "segments": a.segments, "mask_check": a.mask_check,
           "date": time.strftime("%Y-%m-%d")}
    print(json.dumps(out) if a.json else out)


if __name__ == "__main__":
    main()
