#!/usr/bin/env python3
"""Per-scene cost of ``pc-ovseg bench`` and the plan of a full split from it.

    python scripts/bench_split.py [--root R] [--frames 60] [--clip] [--executor local|ray] --json

Without ``--root`` it writes the three-scene ScanNet fixture (tests/dataset_fixtures.py, .sens
frames rendered from the real labelled scene0000_00 in ../shared/data) and runs the split twice
side by side: the GT oracle (the 3D path alone) and, with ``--clip``, the default 2D path with
random-initialised CLIP ViT-B/16 weights (the real architecture: same FLOPs as trained weights).
Prints one JSON object: per-scene seconds, views, points and peak RSS, and the projection to the
312 ScanNet val scenes (``--val-points`` points and ``--val-frames`` frames per scene after
``--frame-skip``; the 3D part of a view scaled with the points, the 2D encoder's part not).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _split(root, out, bench_kw, clip: bool) -> dict:
    from pc_ovseg.bench import run_bench
    from pc_ovseg.config import BenchConfig, RunConfig
    cfg = RunConfig()
    cfg.output.progress = False
    if clip:
        cfg.encoder.clip_weights = "none"      # random weights of the real ViT-B/16
    s = run_bench("scannet", root, out, cfg, BenchConfig(**bench_kw))
    per = [dict(scene=n, **r) for n, r in s["scene_results"].items()]
    views = sum(r["views"] for r in per)
    return {"miou": s["miou"], "coverage": s["coverage"], "scenes": s["scenes_done"], "failed": s["scenes_failed"],
            "wall_s": s["seconds"], "per_scene": per,
            "seconds_per_view": round(sum(r["seconds"] for r in per) / max(views, 1), 4),
            "peak_rss_mb_max": s["per_scene"]["peak_rss_mb_max"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", help="a ScanNet root (default: write the 3-scene fixture)")
    ap.add_argument("--frames", type=int, default=60, help="fixture frames per scene")
    ap.add_argument("--clip", action="store_true", help="also the default CLIP path (random ViT-B/16)")
    ap.add_argument("--executor", default="local", choices=("local", "ray"))
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--val-scenes", type=int, default=312)
    ap.add_argument("--val-frames", type=float, default=80.0,
                    help="frames per val scene after --frame-skip (ScanNet val: ~1,660 frames, skip 20)")
    ap.add_argument("--val-points", type=float, default=148_000.0, help="vh_clean_2 vertices per val scene")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE.parent / "tests"))
    work = Path(tempfile.mkdtemp(prefix="bench_split_"))
    root = args.root
    t0 = time.perf_counter()
    if root is None:
        from conftest import shared_data_dir
        from dataset_fixtures import write_scannet
        root = write_scannet(work / "scannet", shared_data_dir(), frames=args.frames)
    fixture_s = round(time.perf_counter() - t0, 2)
    kw = {"executor": args.executor, "workers": args.workers}
    out = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or platform.platform()}",
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "root": str(root), "fixture_s": fixture_s,
           "executor": args.executor, "workers": args.workers}
    out["oracle"] = _split(root, work / "oracle", {**kw, "oracle": True}, clip=False)
    if args.clip:
        out["clip_vit_b16"] = _split(root, work / "clip", kw, clip=True)
    # the 3D part of a view (visibility, fusion: the oracle's whole cost) grows with the points,
    # the 2D encoder's part does not: scale each by what it depends on
    per = out["oracle"]["per_scene"]
    scale = args.val_points / (sum(r["points"] for r in per) / len(per))
    spv3d = out["oracle"]["seconds_per_view"] * scale
    proj = {"oracle": spv3d * args.val_frames}
    if "clip_vit_b16" in out:
        proj["clip_vit_b16"] = (out["clip_vit_b16"]["seconds_per_view"] - out["oracle"]["seconds_per_view"]
                                + spv3d) * args.val_frames
    proj = {k: {"seconds_per_scene": round(v, 1), "hours_312_scenes_one_worker": round(v * args.val_scenes / 3600, 2)}
            for k, v in proj.items()}
    out["projection"] = {"val_scenes": args.val_scenes, "val_frames": args.val_frames,
                         "val_points": args.val_points, **proj}
    print(json.dumps(out, indent=None if args.json else 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
