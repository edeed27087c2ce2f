#!/usr/bin/env python3
"""City scale: time and memory of `run` from 1M to 10M points, tiled, against untiled runs.

    python scripts/bench_scale.py [--sizes 1e6,3e6,1e7] [--untiled-max 3e6] [--clip-size 3e6] --json

Each cloud is real airborne LiDAR (copies of PDAL's classified sample_c.las, tests/city_fixture.py)
written as one LAS. Every case runs in its own process (a fresh peak): the oracle (2D labels from
the classification, the 3D path alone) tiled with the defaults (`--tiles auto`), the oracle
untiled up to --untiled-max points, and the default 2D path with random-initialised CLIP
ViT-B/16 (the real architecture, 512-d features stored) on --clip-size points with
--clip-max-views views per tile (the memory of 512-d features; CLIP's per-view time is in
docs/encoders.md). Peak RSS is sampled every 0.1 s over the whole process (split, tiles, merge).
Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

CASE = r'''
import json, os, sys, threading, time
peak = [0]
def sample():
    page = os.sysconf("SC_PAGE_SIZE")
    while True:
        with open("/proc/self/statm") as f:
            peak[0] = max(peak[0], int(f.read().split()[1]) * page)
        time.sleep(0.1)
threading.Thread(target=sample, daemon=True).start()
import torch
torch.set_num_threads(min(2, os.cpu_count() or 1))
from pc_ovseg.config import RunConfig
from pc_ovseg.labels import load_labelset
from pc_ovseg.tiles import OracleSpec, run_tiled, tile_budget
path, out, mode, max_views = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
cfg = RunConfig()
cfg.output.labels = "asprs"
cfg.output.progress = False
if max_views != "none":
    cfg.views.max_views = int(max_views)
oracle = None
if mode.startswith("oracle"):
    oracle = OracleSpec("classification", load_labelset("asprs").class_names)
else:
    cfg.encoder.clip_weights = "none"
    cfg.scale.tiles = "auto"
budget = tile_budget(path, cfg.scale) if mode != "oracle-untiled" else 10**12
t = time.perf_counter()
s = run_tiled(path, out, cfg, budget=budget, oracle=oracle,
              gt=OracleSpec("classification", load_labelset("asprs").class_names))
keys = ("points", "tiles", "views", "coverage", "miou", "oacc", "timings", "peak_rss_mb_max")
print(json.dumps({**{k: s.get(k) for k in keys}, "wall_s": round(time.perf_counter() - t, 2),
                  "peak_rss_mb": round(peak[0] / 2**20, 1)}))
'''


def _case(path, out, mode, max_views) -> dict:
    p = subprocess.run([sys.executable, "-c", CASE, str(path), str(out), mode, str(max_views)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        return {"error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}"}
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1e6,3e6,1e7")
    ap.add_argument("--untiled-max", type=float, default=3e6)
    ap.add_argument("--clip-size", type=float, default=3e6, help="0 = no CLIP case")
    ap.add_argument("--clip-max-views", type=int, default=8)
    ap.add_argument("--work", help="folder for the clouds and runs (default: a temporary one)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE.parent / "tests"))
    from conftest import shared_data_dir
    from city_fixture import write_city
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_scale_"))
    work.mkdir(parents=True, exist_ok=True)
    res = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "cases": []}
    sizes = [int(float(x)) for x in args.sizes.split(",")]
    for n in sizes:
        las = work / f"city_{n}.las"
        t = time.perf_counter()
        facts = write_city(las, shared_data_dir(), n) if not las.exists() else {"points": None}
        write_s = round(time.perf_counter() - t, 1)
        modes = ["oracle"] + (["oracle-untiled"] if n <= args.untiled_max else [])
        modes += ["clip"] if args.clip_size and n == int(args.clip_size) else []
        for mode in modes:
            r = _case(las, work / f"run_{n}_{mode}", mode, args.clip_max_views if mode == "clip" else "none")
            res["cases"].append({"size": n, "mode": mode, "write_s": write_s, "points_written": facts["points"], **r})
            print(json.dumps(res["cases"][-1]), file=sys.stderr, flush=True)
    tiled = {c["size"]: c for c in res["cases"] if c["mode"] == "oracle" and "wall_s" in c}
    if len(tiled) >= 2:
        lo, hi = min(tiled), max(tiled)
        per = lambda c: c["wall_s"] / c["points"]  # noqa: E731
        res["time_per_point_ratio_max_vs_min"] = round(per(tiled[hi]) / per(tiled[lo]), 3)
    print(json.dumps(res, indent=None if args.json else 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
