#!/usr/bin/env python3
"""Make per-point box labels for the ScanNet sample (mmdetection3d demo scene0000_00).

    python scripts/prepare_scannet_sample.py ../shared/data/scannet-scene0000 OUT.ply

Points inside one of the 27 axis-aligned boxes (``boxes_unaligned``, in the cloud's coordinates)
get that box's class id (smallest box wins where boxes overlap); all others get 255 (ignored).
Class ids index the sorted list of box names, printed as --classes for bench_oracle.py.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def box_labels(xyz: np.ndarray, boxes: list[dict]) -> tuple[np.ndarray, list[str]]:
    names = sorted({b["name"] for b in boxes})
    labels = np.full(len(xyz), 255, np.int32)
    best = np.full(len(xyz), np.inf)
    for b in boxes:
        c, s = np.asarray(b["center"]), np.asarray(b["size"])
        inside = np.all(np.abs(xyz - c) <= s / 2, axis=1)
        vol = float(np.prod(s))
        take = inside & (vol < best)
        labels[take] = names.index(b["name"])
        best[take] = vol
    return labels, names


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(__doc__)
        return 2
    src, out = Path(argv[0]), Path(argv[1])
    from pc_ovseg import io
    cloud = io.read_cloud(src / "scene0000_00.bin", layout="xyzrgb")
    scene = json.loads((src / "scene.json").read_text())
    labels, names = box_labels(cloud.world_xyz, scene["boxes_unaligned"])
    io.write(out, cloud, labels=labels)
    print(json.dumps({"out": str(out), "points": len(cloud), "labelled": int((labels != 255).sum()),
                      "classes": ",".join(names)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
