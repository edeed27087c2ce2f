#!/usr/bin/env python3
"""Generate data/sample_room.ply: the bundled, project-made sample scene (CC0).

A 6 x 5 x 2.7 m furnished room sampled as a coloured point cloud with a per-point ``label``
(index into data/sample_room.classes.txt). Deterministic: rerunning writes the same file.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

CLASSES = ["wall", "floor", "ceiling", "door", "window", "table", "chair", "sofa", "cabinet", "bed", "lamp"]
SPACING = 0.045  # metres between samples on every surface


def box_surface(rng, lo, hi, faces="all"):
    """Points on the faces of an axis-aligned box (optionally some faces only) with normals."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    pts, nrm = [], []
    for axis in range(3):
        for side, val in ((-1, lo[axis]), (1, hi[axis])):
            if faces != "all" and (axis, side) not in faces:
                continue
            a, b = [i for i in range(3) if i != axis]
            area = (hi[a] - lo[a]) * (hi[b] - lo[b])
            n = max(int(area / SPACING ** 2), 4)
            p = np.empty((n, 3))
            p[:, a] = rng.uniform(lo[a], hi[a], n)
            p[:, b] = rng.uniform(lo[b], hi[b], n)
            p[:, axis] = val
            nn = np.zeros((n, 3)); nn[:, axis] = side
            pts.append(p); nrm.append(nn)
    return np.concatenate(pts), np.concatenate(nrm)


def main(out: str) -> None:
    rng = np.random.default_rng(7)
    parts = []  # (points, normals, label, rgb)

    def add(lo, hi, label, rgb, faces="all", jitter=12):
        p, n = box_surface(rng, lo, hi, faces)
        c = np.clip(np.asarray(rgb) + rng.normal(0, jitter, (len(p), 3)), 0, 255)
        parts.append((p, n, np.full(len(p), CLASSES.index(label)), c))

    W, D, H = 6.0, 5.0, 2.7
    add([0, 0, -0.02], [W, D, 0], "floor", [150, 110, 70], faces=[(2, 1)])
    add([0, 0, H], [W, D, H + 0.02], "ceiling", [235, 235, 230], faces=[(2, -1)])
    add([0, -0.02, 0], [W, 0, H], "wall", [215, 205, 185], faces=[(1, 1)])
    add([0, D, 0], [W, D + 0.02, H], "wall", [215, 205, 185], faces=[(1, -1)])
    add([-0.02, 0, 0], [0, D, H], "wall", [200, 210, 190], faces=[(0, 1)])
    add([W, 0, 0], [W + 0.02, D, H], "wall", [200, 210, 190], faces=[(0, -1)])
    add([2.0, D - 0.01, 1.0], [4.0, D, 2.2], "window", [140, 190, 235], faces=[(1, -1)], jitter=6)
    add([0.005, 0.6, 0.0], [0.01, 1.5, 2.1], "door", [110, 70, 40], faces=[(0, 1)])
    # table with legs, four chairs
    add([2.2, 1.8, 0.72], [3.8, 2.8, 0.76], "table", [120, 80, 50])
    for x in (2.25, 3.7):
        for y in (1.85, 2.7):
            add([x, y, 0], [x + 0.05, y + 0.05, 0.72], "table", [90, 60, 40])
    for cx, cy, bx in ((2.6, 1.4, 0), (3.4, 1.4, 0), (2.6, 3.2, 1), (3.4, 3.2, 1)):
        add([cx - 0.22, cy - 0.22, 0.42], [cx + 0.22, cy + 0.22, 0.46], "chair", [40, 90, 160])
        by = cy + 0.2 if bx else cy - 0.24
        add([cx - 0.22, by, 0.46], [cx + 0.22, by + 0.04, 0.95], "chair", [40, 90, 160])
        for lx in (-0.2, 0.17):
            for ly in (-0.2, 0.17):
                add([cx + lx, cy + ly, 0], [cx + lx + 0.03, cy + ly + 0.03, 0.42], "chair", [30, 30, 30])
    # sofa, cabinet, bed, lamp
    add([0.3, 3.6, 0], [2.2, 4.6, 0.45], "sofa", [160, 40, 45])
    add([0.3, 4.45, 0.45], [2.2, 4.75, 0.9], "sofa", [160, 40, 45])
    add([5.4, 0.3, 0], [5.95, 1.5, 1.8], "cabinet", [230, 225, 210], jitter=8)
    add([4.0, 3.0, 0], [5.9, 4.9, 0.55], "bed", [90, 140, 90])
    add([5.6, 4.6, 0], [5.9, 4.9, 0.35], "lamp", [250, 220, 120])
    add([0.6, 0.3, 0], [0.7, 0.4, 1.5], "lamp", [60, 60, 60])
    add([0.45, 0.15, 1.5], [0.85, 0.55, 1.75], "lamp", [250, 220, 120])

    xyz = np.concatenate([p[0] for p in parts]).astype(np.float32)
    labels = np.concatenate([p[2] for p in parts]).astype(np.int32)
    rgb = np.concatenate([p[3] for p in parts]).astype(np.uint8)
    xyz += rng.normal(0, 0.003, xyz.shape).astype(np.float32)  # sensor-like noise

    from plyfile import PlyData, PlyElement
    v = np.empty(len(xyz), [("x", "f4"), ("y", "f4"), ("z", "f4"),
                            ("red", "u1"), ("green", "u1"), ("blue", "u1"), ("label", "i4")])
    for i, k in enumerate("xyz"):
        v[k] = xyz[:, i]
    v["red"], v["green"], v["blue"] = rgb.T
    v["label"] = labels
    PlyData([PlyElement.describe(v, "vertex")], text=False,
            comments=["pc_ovseg sample room (CC0), made by scripts/make_sample_room.py",
                      "label: " + ",".join(CLASSES)]).write(out)
    Path(out).with_suffix(".classes.txt").write_text("\n".join(CLASSES) + "\n")
    print(f"{out}: {len(xyz)} points, {Path(out).stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "data/sample_room.ply")
