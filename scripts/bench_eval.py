#!/usr/bin/env python
"""Time pc_ovseg.eval.evaluate on N points (default 10M) with a K-class label set; run once.

    OMP_NUM_THREADS=2 python scripts/bench_eval.py [--points 10000000] [--classes scannet200] [--json]

Ground truth is the real SemanticKITTI scan's labels tiled to N points; predictions are the ground
truth with 30 % of the points set to random classes and 5 % unseen.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pc_ovseg.eval import evaluate  # noqa: E402
from pc_ovseg.labels import load_labelset, remap_labels  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=10_000_000)
    ap.add_argument("--classes", default="semantickitti19")
    ap.add_argument("--data", default=os.environ.get("PC_OVSEG_SHARED_DATA",
                                                     Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    ls = load_labelset(a.classes)
    rng = np.random.default_rng(0)
    base = np.load(Path(a.data) / "semantickitti" / "labels_000000.npy").reshape(-1)
    # spread the scan's 20 ids over the label set's ids so every run uses the whole class range
    ids = ls.ids
    base = ids[(base.astype(np.int64) * 7919) % len(ids)]
    gt = np.resize(base, a.points).astype(np.int32)
    pred = gt.copy()
    flip = rng.random(a.points) < 0.3
    pred[flip] = rng.choice(ids, int(flip.sum()))
    seen = rng.random(a.points) >= 0.05
    t0 = time.perf_counter()
    r = evaluate(pred, gt, ls, seen=seen)
    t_eval = time.perf_counter() - t0
    raw = np.resize(np.fromiter(ls.raw_map or {0: 0}, dtype=np.int64), a.points)
    t0 = time.perf_counter()
    remap_labels(raw, ls.raw_map or {0: 0})
    t_remap = time.perf_counter() - t0
    out = {"points": a.points, "labelset": ls.name, "classes": ls.num_classes, "evaluate_s": round(t_eval, 3),
           "remap_s": round(t_remap, 3), "miou": round(r.miou, 4), "coverage": round(r.coverage, 4)}
    print(json.dumps(out) if a.json else "  ".join(f"{k} {v}" for k, v in out.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
