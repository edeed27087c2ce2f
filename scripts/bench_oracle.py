#!/usr/bin/env python3
"""Oracle benchmark: the 3D pipeline (views -> fusion -> query -> eval) with GT-made 2D predictions.

    python scripts/bench_oracle.py INPUT --gt LABELS --classes NAMES [--frames DIR] [--noise 0.3] --json

--gt is a per-point field of INPUT (``label`` in a PLY, ``classification`` in LAS) or a label file
(.npy, .label, .txt). --classes is a label-set name or comma-separated names indexed by label id;
ids beyond the list, or named ``ignore``, are ignored. Points with non-finite coordinates (the
no-depth pixels of organised Kinect clouds) are ignored too.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("input")
    ap.add_argument("--gt", required=True, help="field name of INPUT, or a label file")
    ap.add_argument("--classes", required=True, help="label-set name or comma-separated class names")
    ap.add_argument("--frames", help="RGB-D folder / manifest whose frames are the views")
    ap.add_argument("--noise", type=float, default=0.0, help="fraction of regions per view relabelled wrongly")
    ap.add_argument("--max-views", type=int, default=None)
    ap.add_argument("--layout", help="raw .bin/.npy layout, e.g. xyzrgb")
    ap.add_argument("--gt-divide", type=int, default=1, help="use label // K (mOSD: 10 merges object parts)")
    ap.add_argument("--remap-gt", action="store_true",
                    help="the GT holds the label set's raw ids (ScanNet NYU40, SemanticKITTI raw): map them first")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", help="several noise seeds in one call (views made once), e.g. 0,1,2: "
                                    "reports each, their mean and min")
    ap.add_argument("--min-views", type=int, default=None, help="planner: views wanted per point (rendered views)")
    ap.add_argument("--zoom", type=int, default=None, help="organised clouds: crops enlarged this much (1 = off)")
    ap.add_argument("--mask-check", type=float, default=None, help="fusion: 2D mask check strictness (0 = off)")
    ap.add_argument("--segments", type=float, default=None, help="fusion: weight of the segment's evidence (0 = off)")
    ap.add_argument("--evidence-cap", type=float, default=None, help="fusion: views counted as evidence, at most")
    ap.add_argument("--balance-power", type=float, default=None, help="fusion: 1 = granularities equal, 0 = plain mean")
    ap.add_argument("--not-drawn", type=float, default=None, help="fusion: weight where another point is drawn")
    ap.add_argument("--weak-evidence", type=float, default=None,
                    help="fusion: points backed by less evidence take their strong neighbours' answer (0 = off)")
    ap.add_argument("--tiles", default="auto",
                    help="auto (tile clouds of more than --tile-points), off, or N points per tile (pc_ovseg.tiles)")
    ap.add_argument("--tile-points", type=int, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import torch
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    from pc_ovseg import io
    from pc_ovseg.errors import PcOvsegError
    from pc_ovseg.eval import evaluate
    from pc_ovseg.labels import parse_classes
    from pc_ovseg.fusion import FusionConfig
    from pc_ovseg.oracle import load_gt, oracle_fuse
    from pc_ovseg.query import QueryEngine
    from pc_ovseg.tiles import tile_budget

    t0 = time.time()
    try:
        cloud = io.read_cloud(args.input, layout=args.layout)
        ls = parse_classes(args.classes)
        names = list(ls.class_names)
        if args.remap_gt:  # raw dataset ids -> the label set's ids, as `pc-ovseg eval --remap-gt`
            from pc_ovseg.labels import remap_labels
            raw = load_gt(cloud, args.gt, [str(i) for i in range(1 << 16)], divide=args.gt_divide)
            cloud = cloud.with_fields(**{"gt_remapped": remap_labels(raw, ls)})
            args.gt, args.gt_divide = "gt_remapped", 1
        gt_eval = load_gt(cloud, args.gt, names, divide=args.gt_divide)
        valid = gt_eval >= 0
        frames = io.read_frames(args.frames) if args.frames else None
        knobs = {k: getattr(args, k) for k in ("mask_check", "segments", "evidence_cap", "balance_power",
                                               "not_drawn", "weak_evidence")}
        cfg = FusionConfig(**{k: v for k, v in knobs.items() if v is not None})
        view_kw = {k: getattr(args, k) for k in ("min_views", "zoom") if getattr(args, k) is not None}
        from pc_ovseg.config import ScaleConfig
        scale = ScaleConfig(tiles=args.tiles if args.tiles in ("auto", "off") else int(args.tiles),
                            **({"tile_points": args.tile_points} if args.tile_points else {}))
        budget = tile_budget(cloud, scale) if frames is None else None
        if budget is not None:  # the tiled path, as `run` takes it
            return _tiled(args, cloud, gt_eval, names, budget, cfg, view_kw, t0)
        seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [args.seed]
        views = None
        if len(seeds) > 1:  # the same views for every seed: only the noise differs
            from pc_ovseg.config import ViewsConfig
            from pc_ovseg.views import view_jobs
            jobs = view_jobs(frames if frames is not None else cloud, cloud,
                             ViewsConfig(max_views=args.max_views, **view_kw))
            views = [job.make() for job in jobs]
        runs = []
        for seed in seeds:
            fc = oracle_fuse(cloud, gt_eval, names, frames=frames, noise=args.noise, max_views=args.max_views,
                             seed=seed, fusion_cfg=cfg, views=views, **view_kw)
            pred = QueryEngine(fc).labels(names).labels
            res = evaluate(pred, gt_eval, names, ignore_label=-1)
            runs.append((seed, res.to_json(), fc))
    except PcOvsegError as err:
        print(f"bench_oracle: error: {err}", file=sys.stderr)
        return 2
    out = runs[0][1]
    fc = runs[0][2]
    out.update({"input": args.input, "noise": args.noise, "views": fc.meta.get("views"),
                "points": len(cloud), "evaluated_points": int(valid.sum()),
                "coverage": float(fc.seen[valid].mean()) if valid.any() else 0.0,
                "small_class_miou": small_class_miou(out), "seconds": round(time.time() - t0, 3)})
    if len(runs) > 1:
        m = [r[1]["miou"] for r in runs]
        sm = [small_class_miou(r[1]) for r in runs]
        out["seeds"] = {str(seed): {"miou": j["miou"], "small_class_miou": small_class_miou(j)} for seed, j, _ in runs}
        out.update(miou_mean=float(np.mean(m)), miou_min=float(np.min(m)),
                   small_class_miou_mean=None if None in sm else float(np.mean(sm)))
    out.pop("confusion", None)
    if args.json:
        print(json.dumps(out))
    else:
        print(f"mIoU {out['miou']:.4f}  mAcc {out['macc']:.4f}  coverage {out['coverage']:.4f}  "
              f"views {out['views']}  {out['seconds']:.1f} s")
        if "miou_mean" in out:
            print(f"over seeds {args.seeds}: mIoU mean {out['miou_mean']:.4f}, min {out['miou_min']:.4f}")
    return 0


SMALL_CLASS = 200   # points: a class with less support than this in the scene is "small"


def small_class_miou(result: dict) -> float | None:
    """Mean IoU over the classes present with fewer than SMALL_CLASS points (None if there are none):
    small objects are what a neighbourhood prior drowns first."""
    ious = [v["iou"] for v in result["per_class"].values() if 0 < v["support"] < SMALL_CLASS and v["iou"] is not None]
    return float(np.mean(ious)) if ious else None


def _tiled(args, cloud, gt_eval, names, budget, fusion_cfg, view_kw, t0) -> int:
    """Tile by tile through pc_ovseg.tiles (a temporary output folder); same JSON fields."""
    import tempfile
    from dataclasses import replace
    from pc_ovseg.config import RunConfig
    from pc_ovseg.tiles import OracleSpec, run_tiled
    cfg = RunConfig()
    cfg.fusion = fusion_cfg
    cfg.views = replace(cfg.views, max_views=args.max_views, **view_kw)
    cfg.output.progress = False
    with tempfile.TemporaryDirectory(prefix="bench_oracle_") as d:
        spec = OracleSpec("oracle_gt", names, noise=args.noise, seed=args.seed)
        s = run_tiled(cloud.with_fields(oracle_gt=gt_eval), d, cfg, budget=budget, oracle=spec)
    out = {k: s.get(k) for k in ("miou", "macc", "oacc", "per_class")}
    out.update({"input": args.input, "noise": args.noise, "views": s["views"], "points": len(cloud),
                "evaluated_points": int((gt_eval >= 0).sum()), "coverage": s["eval_coverage"],
                "tiles": s["tiles"], "small_class_miou": small_class_miou(out), "seconds": round(time.time() - t0, 3)})
    if args.json:
        print(json.dumps(out))
    else:
        print(f"mIoU {out['miou']:.4f}  coverage {out['coverage']:.4f}  views {out['views']}  "
              f"tiles {out['tiles']}  {out['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
