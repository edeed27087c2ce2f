#!/usr/bin/env python3
"""Student fidelity: distil oracle-fused labels into the 3D U-Net, then segment a cloud from geometry alone.

    python scripts/bench_distill.py TRAIN_INPUT... --test INPUT [--test ...] --classes NAMES \\
        [--cpu-minutes M] [--supervised] [--ensemble-views N] [--point-budget 20000] --json

Inputs are CLOUD files with a label field (--gt) or POINTS::LABELS pairs (e.g. SemanticKITTI
``points_000000.npy::labels_000000.npy``). Train inputs are oracle-fused into a scene directory
and trained on with pc_ovseg.backbone.dataset.train_dataset (random sphere crops, prefetch
thread); ``--supervised`` trains the same network with the same data, augmentation and budget on
cross-entropy against the GT labels (the upper bound), and the JSON gives both per class.

Every input is a cloud carrying the per-point label field named by --gt (``label`` in a PLY,
``classification`` in a LAS file); --classes is a label-set name or comma-separated names by id,
as in scripts/bench_oracle.py. The train inputs are fused with pc_ovseg.oracle.oracle_fuse
(one-hot label maps of rendered views: points no view sees stay unseen). The
student trains on the CPU for at most M minutes, predicts the test input with no images, and the
JSON reports ``miou`` on the test input, ``miou_train_unseen`` on the train points no view saw,
``seconds``, and the settings.

One scan only? Split it into parts first (angular sectors around the sensor):

    python scripts/bench_distill.py --split SCAN.npy --split-labels LABELS.npy --parts 4 --out-dir DIR
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def split_scan(scan: str, labels: str, parts: int, out_dir: str) -> list[str]:
    """Write PLY parts (field ``label``) of one scan: equal angular sectors about the z axis."""
    from pc_ovseg import io
    cloud = io.read_cloud(scan)
    lab = io.read_labels(labels).reshape(-1)
    ang = np.arctan2(cloud.xyz[:, 1], cloud.xyz[:, 0])
    sector = np.minimum(((ang + np.pi) / (2 * np.pi) * parts).astype(int), parts - 1)
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for k in range(parts):
        part = cloud.select(sector == k)
        path = os.path.join(out_dir, f"part{k}.ply")
        io.write(path, part.with_fields(label=lab[sector == k].astype(np.int32)))
        paths.append(path)
    return paths


def _read_input(spec: str, gt_field: str, names: list[str]):
    """``CLOUD`` (with the label field) or ``POINTS::LABELS`` (a cloud and a label file)."""
    from pc_ovseg import io
    from pc_ovseg.oracle import load_gt
    path, _, labels = spec.partition("::")
    cloud = io.read_cloud(path)
    return cloud, load_gt(cloud, labels or gt_field, names)


def _fuse_to(path: str, cloud, gt, names, max_views, views=None):
    """Oracle-fuse one input and save it as a training scene (GT kept as field ``label``, normals)."""
    from pc_ovseg.data import PointCloud
    from pc_ovseg.geometry import estimate_normals
    from pc_ovseg.oracle import oracle_fuse
    fc = oracle_fuse(cloud, gt, names, max_views=max_views, views=views)
    c = fc.cloud
    fc.cloud = PointCloud(c.xyz, c.rgb, c.normals if c.normals is not None else estimate_normals(c.xyz),
                          {"label": gt.astype(np.int32)}, c.origin, source=c.source)
    fc.save(path)
    return fc


def _score(ck, clouds, gts, names, tta):
    """Pooled mIoU of a checkpoint over test clouds (no images), with per-class IoU."""
    from pc_ovseg.backbone.predict import predict
    from pc_ovseg.eval import evaluate
    from pc_ovseg.query import QueryEngine
    total, preds = None, []
    for cloud, gt in zip(clouds, gts):
        fc = predict(ck, cloud, tta=tta, device="cpu")
        preds.append(fc)
        r = evaluate(QueryEngine(fc).labels(names).labels, gt, names, ignore_label=-1)
        total = r if total is None else total + r
    return total, preds


def _per_class(r):
    return {n: (round(float(r.iou[i]), 4) if r.present[i] else None) for i, n in enumerate(r.class_names)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("train", nargs="*", help="training inputs: CLOUD with a label field, or POINTS::LABELS")
    ap.add_argument("--test", action="append", default=[], help="held-out input (repeatable), same forms")
    ap.add_argument("--gt", default="label", help="per-point label field of CLOUD inputs")
    ap.add_argument("--classes", help="label-set name or comma-separated class names by id")
    ap.add_argument("--cpu-minutes", type=float, default=None,
                    help="training budget in CPU minutes of this process (time.process_time; validation excluded)")
    ap.add_argument("--max-minutes", type=float, default=None, help="training budget in wall minutes instead")
    ap.add_argument("--epochs", type=int, default=1000, help="upper bound; the time budget usually stops first")
    ap.add_argument("--steps-per-epoch", type=int, default=50)
    ap.add_argument("--voxel-size", type=float, default=0.05)
    ap.add_argument("--arch", default="MinkUNet18A")
    ap.add_argument("--planes", help="override widths (8 values) for a faster CPU student")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--optimizer", default="adamw")
    ap.add_argument("--schedule", default="poly", choices=["poly", "cosine", "constant"])
    ap.add_argument("--loss", default="cosine+contrast", choices=["cosine", "cosine+contrast"])
    ap.add_argument("--inputs", default="ones")
    ap.add_argument("--point-budget", type=int, default=20000, help="points per random sphere crop; 0 = whole scans")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--mix", action="store_true", help="Mix3D: overlay two crops per sample")
    ap.add_argument("--no-rotate", action="store_true")
    ap.add_argument("--scale", default="0.9,1.1")
    ap.add_argument("--jitter", type=float, default=0.01)
    ap.add_argument("--bn-momentum", type=float, default=None)
    ap.add_argument("--supervised", action="store_true",
                    help="also train the same network with cross-entropy on the GT labels (upper bound)")
    ap.add_argument("--supervised-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--val", action="store_true", help="validate on the test inputs every epoch (curve only; "
                                                       "the reported numbers are the final weights')")
    ap.add_argument("--ensemble-views", type=int, default=0,
                    help="also fuse each test input from N views and from every other of them: "
                         "fusion alone vs student alone vs 2D-3D ensemble")
    ap.add_argument("--max-views", type=int, default=None, help="oracle fusion view budget per train input")
    ap.add_argument("--tta", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work-dir", default=None, help="keep fused scenes and checkpoints here (reused when present)")
    ap.add_argument("--split", help=argparse.SUPPRESS)
    ap.add_argument("--split-labels")
    ap.add_argument("--parts", type=int, default=4)
    ap.add_argument("--out-dir")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import tempfile

    import torch
    torch.set_num_threads(args.threads)
    from pc_ovseg.backbone.dataset import CropConfig, train_dataset
    from pc_ovseg.backbone.inputs import Augment
    from pc_ovseg.backbone.predict import ensemble, predict
    from pc_ovseg.errors import PcOvsegError
    from pc_ovseg.eval import evaluate
    from pc_ovseg.labels import parse_classes
    from pc_ovseg.query import QueryEngine

    if args.split:
        for p in split_scan(args.split, args.split_labels, args.parts, args.out_dir):
            print(p)
        return 0
    if not args.train or not args.test or not args.classes:
        ap.error("TRAIN_INPUT..., --test and --classes are required")
    t0 = time.time()
    try:
        names = list(parse_classes(args.classes).class_names)
        work = args.work_dir or tempfile.mkdtemp(prefix="bench_distill_")
        tag = f"v{args.max_views}"
        tdir = os.path.join(work, f"train_{tag}")
        os.makedirs(tdir, exist_ok=True)
        seen_pts = lab_pts = 0
        for k, spec in enumerate(args.train):
            path = os.path.join(tdir, f"{k:02d}_{os.path.basename(spec.partition('::')[0])}.npz")
            if not os.path.isfile(path):
                cloud, gt = _read_input(spec, args.gt, names)
                _fuse_to(path, cloud, gt, names, args.max_views)
            from pc_ovseg.data import FeatureCloud
            fc = FeatureCloud.load(path)
            g = fc.cloud.fields["label"]
            seen_pts += int((fc.seen & (g >= 0)).sum())
            lab_pts += int((g >= 0).sum())
        tests = [_read_input(spec, args.gt, names) for spec in args.test]
        vdir = None
        if args.val:
            vdir = os.path.join(work, "val")
            os.makedirs(vdir, exist_ok=True)
            for k, (cloud, gt) in enumerate(tests):
                p = os.path.join(vdir, f"{k:02d}.npz")
                if not os.path.isfile(p):
                    _fuse_to(p, cloud, gt, names, args.max_views)
        t_fuse = time.time() - t0
        overrides = {}
        if args.planes:
            planes = tuple(int(v) for v in args.planes.split(","))
            overrides = {"planes": planes, "init_dim": planes[0]}
        if args.bn_momentum is not None:
            overrides["bn_momentum"] = args.bn_momentum
        lo, hi = (float(v) for v in args.scale.split(","))
        aug = Augment(rotate=not args.no_rotate, scale=(lo, hi), jitter=args.jitter)
        crop = CropConfig(point_budget=args.point_budget or None, dropout=args.dropout, mix=args.mix)
        budget = args.cpu_minutes if args.cpu_minutes is not None else args.max_minutes
        runs = {}
        kinds = (["supervised"] if args.supervised_only else ["distilled"] + (["supervised"] if args.supervised else []))
        for kind in kinds:
            ck = os.path.join(work, f"{kind}.pt")
            r = train_dataset(tdir, ck, val=vdir, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                              voxel_size=args.voxel_size, inputs=args.inputs, arch=args.arch, lr=args.lr,
                              optimizer=args.optimizer, schedule=args.schedule, batch_size=args.batch_size,
                              crop=crop, augment=aug, loss="ce" if kind == "supervised" else args.loss,
                              max_minutes=budget, cpu_budget=args.cpu_minutes is not None, device="cpu",
                              resume=False, seed=args.seed, progress=False, model_overrides=overrides)
            res, preds = _score(ck, [c for c, _ in tests], [g for _, g in tests], names, args.tta)
            runs[kind] = {"miou": res.miou, "macc": res.macc, "per_class": _per_class(res), "steps": r.steps,
                          "epochs": r.epochs, "final_loss": r.last_loss, "train_budget_used_s": round(r.seconds, 1),
                          "samples_per_budget_s": round(r.samples_per_s, 3), "validation": r.validation,
                          "checkpoint": ck}
            runs[kind]["_preds"] = preds
        out = {"miou": runs[kinds[0]]["miou"], "targets": "oracle-fused", "train": args.train, "test": args.test,
               "train_labelled_points": lab_pts, "train_seen_share": round(seen_pts / max(lab_pts, 1), 4),
               "budget": {"minutes": budget, "clock": "cpu (process_time)" if args.cpu_minutes is not None else "wall"},
               "fuse_seconds": round(t_fuse, 1)}
        for kind, v in runs.items():
            preds = v.pop("_preds")
            out[kind] = v
        if "supervised" in runs and "distilled" in runs:
            out["ratio_to_supervised"] = round(runs["distilled"]["miou"] / max(runs["supervised"]["miou"], 1e-9), 4)
        if args.ensemble_views and "distilled" in runs:
            from pc_ovseg.config import ViewsConfig
            from pc_ovseg.oracle import oracle_fuse
            from pc_ovseg.views import view_jobs
            ens = {"fusion_all_views": None, "fusion_half": None, "student": None, "ensemble_half": None,
                   "ensemble_fill_half": None}
            acc = {k: None for k in ens}
            C = len(names)
            for (cloud, gt), student in zip(tests, _score(runs["distilled"]["checkpoint"], [c for c, _ in tests],
                                                          [g for _, g in tests], names, args.tta)[1]):
                views = [j.make() for j in view_jobs(cloud, cloud, ViewsConfig(max_views=args.ensemble_views))]
                full = oracle_fuse(cloud, gt, names, views=views)
                half = oracle_fuse(cloud, gt, names, views=views[::2])
                cand = {"fusion_all_views": (full, full.seen), "fusion_half": (half, half.seen),
                        "student": (student, None),
                        "ensemble_half": (ensemble(half, student, np.eye(C, dtype=np.float32)), None),
                        "ensemble_fill_half": (ensemble(half, student, np.eye(C, dtype=np.float32), mode="fill"),
                                               None)}
                for k, (fc, seen) in cand.items():
                    lab = QueryEngine(fc).labels(names).labels
                    r = evaluate(lab, gt, names, ignore_label=-1, seen=seen)
                    acc[k] = r if acc[k] is None else acc[k] + r
            out["ensemble"] = {k: {"miou": round(r.miou, 4), "coverage": round(r.coverage, 4)} for k, r in acc.items()}
            out["ensemble"]["views"] = args.ensemble_views
        out.update({"voxel_size": args.voxel_size, "arch": args.arch, "planes": args.planes, "inputs": args.inputs,
                    "point_budget": args.point_budget, "batch_size": args.batch_size, "lr": args.lr,
                    "schedule": args.schedule, "optimizer": args.optimizer, "loss": args.loss,
                    "dropout": args.dropout, "mix": args.mix, "rotate": not args.no_rotate, "scale": args.scale,
                    "bn_momentum": args.bn_momentum, "tta": args.tta, "threads": args.threads, "seed": args.seed,
                    "seconds": round(time.time() - t0, 1)})
    except PcOvsegError as err:
        print(f"bench_distill: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out))
    else:
        line = "  ".join(f"{k} mIoU {v['miou']:.4f} ({v['steps']} steps)" for k, v in out.items()
                         if isinstance(v, dict) and "steps" in v)
        print(f"{line}  ({out['targets']}, {out['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
