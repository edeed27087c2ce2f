#!/usr/bin/env python3
"""SemanticMap speed and memory on real 7-Scenes frames (640x480), the 2D model excluded.

    python scripts/bench_mapping.py [--frames 1000] [--voxel-size 0.05] --json

1. geometry: the 100 shared frames looped to ``--frames`` through ``add_rgbd`` (no encoder):
   update time per frame (wall clock, and CPU time of the updating thread: the machine may be
   shared), voxels and RSS after the first 100 frames and after all of them
   (a looping sequence adds no voxels after the first loop: memory must follow voxels);
2. keyframe fusion: every 10th frame fused with oracle label maps (a fixed labelled cloud
   seen from the frame) and with 512-d features (CLIP's width; random low-res dense grids), the
   fusion step alone timed (visibility, weights, accumulation);
3. queries on the live map: labels over the vocabulary and a heatmap, from this thread while
   another thread keeps streaming frames into the map.
Prints one JSON object with ``--json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PC_OVSEG_SHARED_DATA", ROOT.parent / "shared" / "data")) / "7scenes-redkitchen"


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def ms(values) -> float:
    return round(1e3 * float(np.median(values)), 2) if len(values) else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=1000, help="frames streamed (the 100 shared ones, looped)")
    ap.add_argument("--voxel-size", type=float, default=0.05)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    import torch  # noqa: F401 - loaded by the first feature sampling and every query: not the map's memory

    from pc_ovseg import io
    from pc_ovseg.config import MappingConfig
    from pc_ovseg.data import ViewFeatures
    from pc_ovseg.mapping import SemanticMap
    from pc_ovseg.mapping.oracle import ProjectedLabels, block_labels
    from pc_ovseg.views.frames import cloud_from_frames, select_frames

    seq = io.read_frames(DATA)
    frames = [seq[i] for i in range(len(seq))]
    cfg = MappingConfig(voxel_size=a.voxel_size, snapshot_every=0)
    out: dict = {"machine": f"{os.cpu_count()}-core {platform.machine()}", "date": time.strftime("%Y-%m-%d"),
                 "frames": a.frames, "image": f"{frames[0].camera.width}x{frames[0].camera.height}",
                 "voxel_size": a.voxel_size}

    # 1. geometry, looped
    base = rss_mb()
    smap = SemanticMap(a.voxel_size, config=cfg)
    rss, cpu = {}, []
    for k in range(a.frames):
        c0 = time.thread_time()   # CPU time of this thread: what the update costs when others share the cores
        smap.add_rgbd(frames[k % len(frames)])
        cpu.append(time.thread_time() - c0)
        if k + 1 in (100, a.frames):
            rss[k + 1] = (rss_mb(), smap.size)
    upd = smap.timings["update"]
    (r100, v100), (r_end, v_end) = rss[100], rss[a.frames]
    out.update(update_ms_median=ms(upd), update_ms_p90=round(1e3 * float(np.percentile(upd, 90)), 2),
               update_cpu_ms_median=ms(cpu), load_average_1min=round(os.getloadavg()[0], 2),
               voxels_after_100=v100, voxels_after_all=v_end, rss_mb_after_100=round(r100, 1),
               rss_mb_after_all=round(r_end, 1), rss_growth_100_to_all=round(r_end / r100 - 1, 4),
               map_mb_geometry=round((r100 - base), 1),
               bytes_per_voxel_geometry=round(smap.bytes_per_voxel(), 1))

    # 2. keyframe fusion: oracle label maps, then 512-d features
    ref = cloud_from_frames(seq.subset(select_frames(seq, max_views=20)), voxel_size=0.03, progress=False)
    names = ["a", "b", "c", "d", "e"]
    oracle = ProjectedLabels(ref, block_labels(ref.xyz, len(names)), names)
    lab = SemanticMap(a.voxel_size, encoder=oracle, config=MappingConfig(voxel_size=a.voxel_size, keyframe_every=10,
                                                                         keyframe_move=0, keyframe_turn=0,
                                                                         snapshot_every=0))
    with lab:
        for f in frames:
            lab.add_rgbd(f)
    out.update(keyframes=len(lab.keyframes), fuse_ms_median_labels=ms(lab.timings["fuse"]),
               bytes_per_voxel_labels=round(lab.bytes_per_voxel(), 1))
    rng = np.random.default_rng(0)
    wide = SemanticMap(a.voxel_size, feature_dim=512, config=cfg)
    r0 = rss_mb()
    for k, f in enumerate(frames):
        feats = None
        if k % 10 == 0:
            dense = rng.standard_normal((30, 40, 512)).astype(np.float16)
            feats = ViewFeatures((f.camera.height, f.camera.width), dense=dense)
        wide.add_rgbd(f, feats)
    wide.flush()
    out.update(fuse_ms_median_512=ms(wide.timings["fuse"]), bytes_per_voxel_512=round(wide.bytes_per_voxel(), 1),
               rss_mb_map_512=round(rss_mb() - r0, 1), voxels_512=wide.size)

    # 3. queries on the live map while frames keep streaming in
    live = SemanticMap(a.voxel_size, encoder=oracle, config=MappingConfig(voxel_size=a.voxel_size, keyframe_every=5,
                                                                          snapshot_every=0), live=True)
    for f in frames[:20]:
        live.add_rgbd(f)
    stop = threading.Event()

    def stream():
        k = 20
        while not stop.is_set():
            live.add_rgbd(frames[k % len(frames)])
            k += 1
    t = threading.Thread(target=stream)
    t.start()
    q_labels, q_heat = [], []
    try:
        for _ in range(15):
            t0 = time.perf_counter()
            live.labels(names)
            q_labels.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            live.heatmap("a")
            q_heat.append(time.perf_counter() - t0)
    finally:
        stop.set()
        t.join()
        live.close()
    out.update(query_labels_ms_median=ms(q_labels), query_heatmap_ms_median=ms(q_heat), query_voxels=live.size,
               note="query times include the snapshot (copy under the lock) and a new QueryEngine when the map changed")
    if a.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:28} {v}")


if __name__ == "__main__":
    main()
