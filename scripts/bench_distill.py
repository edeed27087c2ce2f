#!/usr/bin/env python3
"""Student fidelity: distil oracle-fused labels into the 3D U-Net, then segment a cloud from geometry alone.

    python scripts/bench_distill.py TRAIN_INPUT... --test INPUT --gt FIELD --classes NAMES \\
        [--max-minutes M] [--voxel-size 0.05] [--planes 16,32,64,128,64,64,48,48] --json

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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("train", nargs="*", help="training clouds with a label field")
    ap.add_argument("--test", help="held-out cloud with a label field")
    ap.add_argument("--gt", default="label", help="per-point label field of every input")
    ap.add_argument("--classes", help="label-set name or comma-separated class names by id")
    ap.add_argument("--max-minutes", type=float, default=5.0, help="training time budget")
    ap.add_argument("--epochs", type=int, default=1000, help="upper bound; the time budget usually stops first")
    ap.add_argument("--voxel-size", type=float, default=0.05)
    ap.add_argument("--arch", default="MinkUNet18A")
    ap.add_argument("--planes", help="override widths (8 values) for a faster CPU student")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--max-views", type=int, default=None, help="oracle fusion view budget")
    ap.add_argument("--tta", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work-dir", default=None, help="keep the checkpoint here (default: a temp dir)")
    ap.add_argument("--split", help=argparse.SUPPRESS)
    ap.add_argument("--split-labels")
    ap.add_argument("--parts", type=int, default=4)
    ap.add_argument("--out-dir")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import tempfile

    import torch
    torch.set_num_threads(args.threads)
    from pc_ovseg import io
    from pc_ovseg.backbone.predict import predict
    from pc_ovseg.backbone.train import distill
    from pc_ovseg.errors import PcOvsegError
    from pc_ovseg.eval import evaluate
    from pc_ovseg.labels import parse_classes
    from pc_ovseg.oracle import load_gt, oracle_fuse
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
        fused, train_gt = [], []
        for path in args.train:
            cloud = io.read_cloud(path)
            gt_eval = load_gt(cloud, args.gt, names)
            fc = oracle_fuse(cloud, gt_eval, names, max_views=args.max_views)
            fused.append(fc)
            train_gt.append(gt_eval)
        t_fuse = time.time() - t0
        work = args.work_dir or tempfile.mkdtemp(prefix="bench_distill_")
        ck = os.path.join(work, "student.pt")
        overrides = {}
        if args.planes:
            planes = tuple(int(v) for v in args.planes.split(","))
            overrides = {"planes": planes, "init_dim": planes[0]}
        r = distill(fused, ck, epochs=args.epochs, voxel_size=args.voxel_size, arch=args.arch, lr=args.lr,
                    batch_size=1, max_minutes=args.max_minutes, device="cpu", resume=False,
                    model_overrides=overrides, progress=False)

        test = io.read_cloud(args.test)
        gt_test = load_gt(test, args.gt, names)
        pred = QueryEngine(predict(ck, test, tta=args.tta, device="cpu")).labels(names).labels
        res = evaluate(pred, gt_test, names, ignore_label=-1)

        # unseen points of the train inputs: only the student can label them
        un_pred, un_gt, seen_count = [], [], 0
        for fc, gt in zip(fused, train_gt):
            unseen = ~fc.seen & (gt >= 0)
            seen_count += int((fc.seen & (gt >= 0)).sum())
            if unseen.any():
                p = QueryEngine(predict(ck, fc.cloud, tta=args.tta, device="cpu")).labels(names).labels
                un_pred.append(p[unseen])
                un_gt.append(gt[unseen])
        res_un = evaluate(np.concatenate(un_pred), np.concatenate(un_gt), names, ignore_label=-1) if un_pred else None
    except PcOvsegError as err:
        print(f"bench_distill: error: {err}", file=sys.stderr)
        return 2
    out = {"miou": res.miou, "macc": res.macc,
           "miou_train_unseen": None if res_un is None else res_un.miou,
           "train_unseen_points": int(sum(len(g) for g in un_gt)), "train_seen_points": seen_count,
           "targets": "oracle-fused", "test": args.test, "train": args.train, "test_points": len(test),
           "epochs": r.epochs, "steps": r.steps, "final_loss": r.last_loss, "train_seconds": round(r.seconds, 1),
           "fuse_seconds": round(t_fuse, 1), "voxel_size": args.voxel_size, "arch": args.arch,
           "planes": args.planes, "tta": args.tta, "seconds": round(time.time() - t0, 1)}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"test mIoU {out['miou']:.4f}  train-unseen mIoU {out['miou_train_unseen']}  "
              f"({out['targets']}, {out['steps']} steps, {out['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
