"""`pc-ovseg info` (run as `python -m pc_ovseg`) on every file of the sample data."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pc_ovseg


# the subprocess imports the same pc_ovseg as this test (source tree or installed package)
PKG_PARENT = Path(pc_ovseg.__file__).resolve().parents[1]
LAYOUTS = {"scene0000_00.bin": "xyzrgb", "scene0000_00_vert.npy": "xyzrgb"}
SKIP = {".md", ".jpg", ".txt", ".png"}  # documentation and the images of RGB-D folders


def _info(path, *extra) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PKG_PARENT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "pc_ovseg", "info", str(path), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def _inputs(root: Path) -> list[Path]:
    out = [root / "7scenes-redkitchen"]
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix not in SKIP and "7scenes" not in str(p) and "labels_" not in p.name:
            out.append(p)
    return out


def test_info_json_on_every_sample_file(shared_data):
    paths = _inputs(shared_data)
    assert len(paths) >= 18
    seen = {}
    for p in paths:
        extra = ["--layout", LAYOUTS[p.name]] if p.name in LAYOUTS else []
        r = _info(p, "--json", *extra)
        assert r.returncode == 0, f"{p}: {r.stderr}"
        d = json.loads(r.stdout)
        assert ("points" in d or "frames" in d) and "fields" in d, p
        assert "bounds" in d or d["type"] == "labels", p
        seen[p.name] = d
    s = seen["sample_c.las"]
    assert s["points"] == 14408 and s["label_histogram"]["6"] == 12525 and s["label_histogram"]["2"] == 1368
    m = seen["learn0.pcd"]
    assert m["organized"] == [480, 640] and m["points"] == 307200 and "label" in m["fields"]
    assert m["label_histogram"]["0"] == 307200 - m["valid_points"]
    k = seen["7scenes-redkitchen"]
    assert k["frames"] == 100 and k["intrinsics"]["fx"] == 585 and k["intrinsics"]["width"] == 640
    assert 0.3 < k["depth_range"][0] < k["depth_range"][1] < 10
    assert seen["scene.json"]["frames"] == 3 and "depth" not in seen["scene.json"]["fields"]
    assert seen["scene0000_00.bin"]["points"] == 40684
    assert seen["points_000000.npy"]["points"] == 90404 and "label_histogram" in seen["points_000000.npy"]
    sem = seen["scene0000_00_sem_label.npy"]  # a label file is described, not refused
    assert sem["type"] == "labels" and sem["points"] == 81369 and len(sem["label_histogram"]) > 10
    assert seen["autzen_trim.las"]["points"] == 110000 and seen["mvk-thin.las"]["points"] == 6280


def test_info_text(shared_data):
    r = _info(shared_data / "las" / "sample_c.las")
    assert r.returncode == 0 and "14,408" in r.stdout and "building" in r.stdout and "ground" in r.stdout
    r = _info(shared_data / "mosd" / "test2.pcd")
    assert r.returncode == 0 and "640x480" in r.stdout and "label histogram" in r.stdout
    r = _info(shared_data / "7scenes-redkitchen")
    assert r.returncode == 0 and "100" in r.stdout and "fx=585" in r.stdout and " m " in r.stdout


def test_info_missing_path_is_one_line():
    r = _info("/nonexistent/cloud.ply")
    assert r.returncode == 2 and r.stderr.strip() == \
        "pc-ovseg info: error: /nonexistent/cloud.ply: no such file or directory"


def test_info_names_the_classes_of_an_export(tmp_path):
    """An export's ids read as the classes it was labelled with (its result header), unseen as -1."""
    import numpy as np

    from pc_ovseg.data import FeatureCloud, PointCloud
    from pc_ovseg.export import export_labels
    from pc_ovseg.io import describe
    n = 30
    feats = np.eye(3, dtype=np.float16)[np.arange(n) % 3]
    weight = np.where(np.arange(n) < 27, 1, 0).astype(np.float32)
    fc = FeatureCloud(PointCloud(np.random.default_rng(0).uniform(0, 1, (n, 3)).astype(np.float32)), feats,
                      weight, np.ones(n, np.uint16), "labels:wall,floor,chair", ["wall", "floor", "chair"])
    export_labels(tmp_path, fc, ["wall", "floor", "chair"], formats=("ply", "npz"))
    for f in ("labels.ply", "labels.npz"):
        d = describe(tmp_path / f)
        assert d["label_field"] == "label" and set(d["label_names"].values()) == {"wall", "floor", "chair", "unseen"}
