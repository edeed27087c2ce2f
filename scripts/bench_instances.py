#!/usr/bin/env python3
"""Instance benchmark: 3D proposals from oracle 2D instance masks, scored by ScanNet instance AP.

    python scripts/bench_instances.py INPUT --gt-instance IDS --gt LABELS --classes NAMES \
        [--noise 0.3] [--seeds 0,1,2] [--remap-gt] [--stuff wall,floor] --json

Each view's 2D masks are the GT instance field rendered into it (the oracle path: what a perfect
SAM would give); ``--noise p`` splits, merges and drops a fraction p of each view's masks. The
proposals (pc_ovseg.instances.propose) are scored class-agnostic (AP, AP50, AP25), and with the
class each instance's feature gives when the fused features are the oracle's label maps (noisy at
the same p): semantic instance AP, for both instance features (``points``: the members' fused
features; ``views``: the top-k views' 2D features at the instance's pixels). ``--stuff`` classes
(default wall, floor, ceiling: not instances in ScanNet's benchmark) are not evaluated.
Prints one JSON object with the per-stage seconds.
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
    ap.add_argument("--gt-instance", required=True, help="per-point instance id: a field of INPUT or a file (0 = none)")
    ap.add_argument("--gt", required=True, help="per-point semantic id: a field of INPUT or a label file")
    ap.add_argument("--classes", required=True, help="label-set name or comma-separated names by id")
    ap.add_argument("--remap-gt", action="store_true", help="--gt holds the label set's raw ids (NYU40, ...)")
    ap.add_argument("--stuff", default="wall,floor,ceiling", help="classes that are not instances")
    ap.add_argument("--layout", help="raw .bin/.npy column layout, e.g. xyzrgb")
    ap.add_argument("--noise", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", help="several noise seeds in one call (views made once): mean and min")
    ap.add_argument("--max-views", type=int, default=None)
    ap.add_argument("--top-k", type=int, default=5, help="views per instance for the views feature")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import torch
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    from pc_ovseg import io
    from pc_ovseg.config import InstancesConfig, ViewsConfig
    from pc_ovseg.errors import PcOvsegError
    from pc_ovseg.eval_instances import InstancePrediction, evaluate_instances
    from pc_ovseg.fusion import FeatureFusion, view_visibility
    from pc_ovseg.instances import make_instances, view_features
    from pc_ovseg.labels import parse_classes, remap_labels
    from pc_ovseg.oracle import OracleLabels, load_gt
    from pc_ovseg.views import view_jobs

    t0 = time.perf_counter()
    try:
        cloud = io.read_cloud(args.input, layout=args.layout)
        ls = parse_classes(args.classes)
        names = list(ls.class_names)
        if args.remap_gt:
            raw = load_gt(cloud, args.gt, [str(i) for i in range(1 << 16)])
            cloud = cloud.with_fields(gt_remapped=remap_labels(raw, ls))
            args.gt = "gt_remapped"
        sem = load_gt(cloud, args.gt, names)
        inst = _field(cloud, args.gt_instance)
    except PcOvsegError as err:
        print(f"bench_instances: error: {err}", file=sys.stderr)
        return 2
    stuff = {s.strip() for s in args.stuff.split(",") if s.strip()}
    evaluated = [i for i, n in enumerate(names) if n not in stuff and n != "ignore"]
    inst_gt = np.where(inst > 0, inst, 0)
    # views once (their cost is the views stage's, reported apart)
    t = time.perf_counter()
    jobs = view_jobs(cloud, cloud, ViewsConfig(max_views=args.max_views))
    views = [job.make() for job in jobs]
    t_views = time.perf_counter() - t
    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [args.seed]
    runs = []
    for seed in seeds:
        # the run's own path: each view's oracle features (instance masks as regions, each with its
        # class), visibility, fusion, then the instance stage on those cached (vis, features) pairs
        t = time.perf_counter()
        enc = OracleLabels(sem, names, noise=args.noise, seed=seed, instances=inst_gt)
        fusion = FeatureFusion(len(cloud), len(names))
        done = []
        for v in views:
            vis = view_visibility(v, cloud, fusion.cfg)
            fusion.add_weights(vis)
            done.append((vis, enc.encode(v)))
        t_masks = time.perf_counter() - t
        t = time.perf_counter()
        fusion.fuse_views(lambda: done)
        fc = fusion.result(cloud, encoder="labels:" + ",".join(names), class_names=names)
        t_fuse = time.perf_counter() - t
        t = time.perf_counter()
        ins = make_instances(fc, lambda: iter(done), InstancesConfig(feature="points"))
        t_prop = time.perf_counter() - t
        feats = {"points": ins.features}
        t = time.perf_counter()
        feats["views"] = view_features(ins, len(cloud), lambda: iter(done), top_k=args.top_k)
        t_vf = time.perf_counter() - t
        members = ins.member_lists()
        agn = evaluate_instances([([InstancePrediction(m, 0, float(s)) for m, s in zip(members, ins.scores)],
                                   sem, inst_gt)], evaluated, [names[i] for i in evaluated], class_agnostic=True)
        res = {"instances": len(ins), "class_agnostic": _aps(agn)}
        for mode, f in feats.items():
            lab = f.argmax(1)
            conf = f.max(1) * ins.scores
            preds = [InstancePrediction(m, int(c), float(s)) for m, c, s in zip(members, lab, conf)]
            sem_ap = evaluate_instances([(preds, sem, inst_gt)], evaluated, [names[i] for i in evaluated])
            res[f"semantic_{mode}"] = _aps(sem_ap)
        res["seconds"] = {"oracle_2d_and_visibility": round(t_masks, 3), "fusion": round(t_fuse, 3),
                          "proposals_and_point_features": round(t_prop, 3), "stages": ins.meta["seconds"],
                          "view_features": round(t_vf, 3)}
        runs.append((seed, res))
    out = dict(runs[0][1])
    out.update({"input": args.input, "noise": args.noise, "points": len(cloud), "views": len(views),
                "gt_instances": int(len(np.unique(inst_gt[np.isin(sem, evaluated) & (inst_gt > 0)]))),
                "views_seconds": round(t_views, 3), "total_seconds": round(time.perf_counter() - t0, 3)})
    if len(runs) > 1:
        out["seeds"] = {str(s): r for s, r in runs}
        for key in ("ap", "ap50", "ap25"):
            vals = [r["class_agnostic"][key] for _, r in runs]
            out[f"class_agnostic_{key}_mean"] = float(np.mean(vals))
            out[f"class_agnostic_{key}_min"] = float(np.min(vals))
    if args.json:
        print(json.dumps(out))
    else:
        a = out["class_agnostic"]
        print(f"{out['instances']} instances ({out['gt_instances']} GT), class-agnostic AP {a['ap']:.3f} "
              f"AP50 {a['ap50']:.3f} AP25 {a['ap25']:.3f}; proposals {out['seconds']['proposals_and_point_features']:.1f} s")
    return 0


def _field(cloud, spec):
    """A per-point integer field of the cloud, or a label file."""
    from pc_ovseg import io
    from pc_ovseg.errors import InputError
    if spec in cloud.fields:
        v = np.asarray(cloud.fields[spec]).reshape(-1)
    elif os.path.isfile(spec):
        v = io.read_labels(spec).reshape(-1)
    else:
        raise InputError(cloud.source, f"has no per-point field {spec!r} and no file {spec!r} exists")
    if len(v) != len(cloud):
        raise InputError(spec, f"{len(v)} values for {len(cloud)} points")
    return v.astype(np.int64)


def _aps(r) -> dict:
    return {"ap": round(r.mean_ap, 4), "ap50": round(r.mean_ap50, 4), "ap25": round(r.mean_ap25, 4)}


if __name__ == "__main__":
    sys.exit(main())
