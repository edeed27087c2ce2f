#!/usr/bin/env python
"""CPU time per 640x480 view for the 2D feature stage, with random weights of the real sizes.

Random weights cost the same FLOPs as trained ones. Each stage runs in its own process so its
peak memory (max RSS) is its own. SAM automatic masks are timed with a coarse point grid and
extrapolated to 32x32 points (image encoder once + decoder batches scale linearly); random SAM
weights keep almost no masks after the quality thresholds, so thresholds are disabled to time the
full post-processing. Run once on a quiet machine:

    OMP_NUM_THREADS=2 python scripts/bench_encoders.py [--threads 2] [--runs 3]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["superpixels", "clip_dense", "default_path", "default_path_whole", "sam3d", "sam_auto"]


def shared_image():
    import numpy as np
    from PIL import Image
    d = Path(os.environ.get("PC_OVSEG_SHARED_DATA", ROOT.parent / "shared" / "data")) / "7scenes-redkitchen"
    return np.array(Image.open(d / "frame-000000.color.jpg").convert("RGB")), d


def make_view():
    import numpy as np
    from PIL import Image
    from pc_ovseg.data import Camera, View
    rgb, d = shared_image()
    depth = np.array(Image.open(d / "frame-000000.depth.png")).astype(np.float32) / 1000.0
    depth[depth >= 65.535] = 0
    H, W = depth.shape
    rows, cols = np.nonzero(depth > 0)
    index = np.full((H, W), -1, np.int64)
    index[rows, cols] = np.arange(len(rows))
    cam = Camera(np.loadtxt(d / "camera-intrinsics.txt"), np.loadtxt(d / "frame-000000.pose.txt"), W, H)
    return View(cam, rgb, depth, index, np.arange(len(rows)), np.stack([rows, cols], 1).astype(np.int32), name="f0")


def timed(fn, runs, out: dict):
    """Median wall time; also CPU time (all threads), which a loaded machine inflates far less:
    cpu_s / threads estimates the wall time on an idle machine."""
    fn()  # warm-up (allocations, lazy init)
    ts, cs = [], []
    for _ in range(runs):
        c = time.process_time(); t = time.perf_counter(); fn()
        ts.append(time.perf_counter() - t); cs.append(time.process_time() - c)
    out["cpu_s"] = sorted(cs)[len(cs) // 2]
    return sorted(ts)[len(ts) // 2]


def once(fn, out: dict, key: str = "seconds"):
    c = time.process_time(); t = time.perf_counter(); r = fn()
    out[key] = time.perf_counter() - t
    out[key.replace("seconds", "cpu_s") if key == "seconds" else key + "_cpu"] = time.process_time() - c
    return r


def run_stage(stage: str, runs: int) -> dict:
    import torch
    from pc_ovseg.encoders import ClipEncoder, ViewEncoder, get_mask_source
    from pc_ovseg.encoders.sam import SAM_ARCHS, build_sam
    view = make_view()
    out: dict = {"stage": stage, "rss_after_imports_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if stage == "superpixels":
        src = get_mask_source("superpixels")
        out["seconds"] = timed(lambda: src(view), runs, out)
    elif stage in ("clip_dense", "default_path", "default_path_whole"):
        clip = ClipEncoder("ViT-B-16", "none", device="cpu", windows="whole" if stage.endswith("whole") else "slide")
        (rh, rw), org = clip.window_layout(*view.hw)
        out["windows"] = f"{len(org)} x 224^2 over {rw}x{rh}" if clip.windows == "slide" else f"1 x {rw}x{rh}"
        if stage == "clip_dense":
            out["seconds"] = timed(lambda: clip.dense_features(view.rgb), runs, out)
        else:
            ve = ViewEncoder(clip, masks="superpixels")
            out["seconds"] = timed(lambda: ve.compute(view), runs, out)
            out["parts"] = ve.compute(view).meta["seconds"]
    else:
        torch.manual_seed(0)
        sam = build_sam(SAM_ARCHS["vit_b"])
        loose = dict(sam=sam, device="cpu", pred_iou_thresh=-1e9, stability_score_thresh=-1e9)
        from segment_anything import SamPredictor
        pred = SamPredictor(sam)
        with torch.inference_mode():
            once(lambda: pred.set_image(view.rgb), out, "image_encoder_s")
        if stage == "sam3d":
            src = get_mask_source("sam3d", grid=16, max_prompts=256, points_per_batch=64, **loose)
            r = once(lambda: src(view), out)
            out["prompts"] = 256
            out["regions"] = int(r.max()) + 1
        else:
            pps = 8
            src = get_mask_source("sam", points_per_side=pps, points_per_batch=64, **loose)
            once(lambda: src(view), out, "measured_8x8_s")
            scale = (32 * 32) / (pps * pps)     # decoder batches scale with the number of points
            for k in ("", "_cpu"):
                enc, total = out["image_encoder_s" + k], out["measured_8x8_s" + k]
                out[("seconds" if not k else "cpu_s")] = enc + max(0.0, total - enc) * scale
            out["note"] = "extrapolated from 8x8 to 32x32 points"
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--stage", choices=STAGES)
    ap.add_argument("--stages", default=",".join(STAGES))
    a = ap.parse_args()
    if a.stage:
        import torch
        torch.set_num_threads(a.threads)
        print(json.dumps(run_stage(a.stage, a.runs)))
        return
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "PYTHONPATH": str(ROOT)}
    rows = []
    for s in a.stages.split(","):
        res = subprocess.run([sys.executable, __file__, "--stage", s, "--threads", str(a.threads), "--runs", str(a.runs)],
                             env=env, capture_output=True, text=True)
        if res.returncode:
            print(res.stderr[-2000:], file=sys.stderr)
            continue
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n{platform.machine()} {os.cpu_count()} CPUs, {a.threads} threads, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"| stage | wall s / view | CPU s / view ({a.threads} threads) | peak RSS MB | notes |\n|---|---|---|---|---|")
    for r in rows:
        notes = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()
                 if k not in ("stage", "seconds", "cpu_s", "peak_rss_mb")}
        print(f"| {r['stage']} | {r['seconds']:.2f} | {r['cpu_s']:.2f} | {r['peak_rss_mb']:.0f} | {json.dumps(notes)} |")


if __name__ == "__main__":
    main()
