#!/usr/bin/env python3
"""Regenerate docs/img/viewer_*.png: the viewer on the ScanNet sample (scene0000_00).

Three views: the plain cloud in RGB, and a result whose features are one-hot labels from the
scene's 27 annotated 3D boxes (points in no box are "other") in label and query views. The
boxed result stands in for a fused one, so the pictures show what a right answer looks like.

    python scripts/viewer_doc_screenshots.py [--data ../shared/data] [--out docs/img]
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from urllib.parse import urlencode

import numpy as np

from pc_ovseg.data import FeatureCloud, PointCloud
from pc_ovseg.viewer import ViewerScene, screenshot, start_server

ROOT = Path(__file__).resolve().parents[1]


def scannet(data: Path) -> tuple[PointCloud, list[dict]]:
    d = data / "scannet-scene0000"
    a = np.fromfile(d / "scene0000_00.bin", np.float32).reshape(-1, 6)
    boxes = json.loads((d / "scene.json").read_text())["boxes_unaligned"]
    return PointCloud(a[:, :3], a[:, 3:].astype(np.uint8), source="scene0000_00.bin"), boxes


def box_oracle(cloud: PointCloud, boxes: list[dict]) -> FeatureCloud:
    """One-hot features: the smallest annotated box a point falls in, else "other"."""
    names = sorted({b["name"] for b in boxes}) + ["other"]
    label = np.full(len(cloud), len(names) - 1)
    best = np.full(len(cloud), np.inf)
    for b in boxes:
        c, s = np.array(b["center"]), np.array(b["size"])
        inside = (np.abs(cloud.xyz - c) <= s / 2 + 0.02).all(1)
        vol = float(np.prod(s))
        take = inside & (vol < best)
        label[take], best[take] = names.index(b["name"]), vol
    feats = np.eye(len(names), dtype=np.float16)[label]
    return FeatureCloud(cloud, feats, np.ones(len(cloud), np.float32), np.ones(len(cloud), np.uint16),
                        "labels", names, {"features": "one-hot from the ScanNet boxes"})


def shoot(scene: ViewerScene, out: Path, **params) -> None:
    scene.prepare()
    srv = start_server(scene)
    try:
        url = srv.url + (f"?{urlencode(params)}" if params else "")
        screenshot(url, out)
        print(f"saved {out}")
    finally:
        srv.shutdown()
        srv.server_close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = ap.parse_args()
    cloud, boxes = scannet(args.data)
    shoot(ViewerScene(cloud, title="scene0000_00.bin"), args.out / "viewer_scannet_rgb.png", size=3)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scene0000_00_boxes.npz"
        box_oracle(cloud, boxes).save(path)
        scene = ViewerScene.from_path(path, title="scene0000_00 (box oracle)")
        shoot(scene, args.out / "viewer_scannet_labels.png", mode="label", size=3)
        shoot(scene, args.out / "viewer_scannet_query.png", q="sofa", size=3)


if __name__ == "__main__":
    main()
