"""End to end: `pc-ovseg run` on real RGB-D frames with the tiny CLIP, interrupted and resumed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pc_ovseg.encoders import make_tiny_clip_checkpoint


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "tiny_clip.pt"
    spec = make_tiny_clip_checkpoint(path)
    return spec.split(":")[1], str(path)


def _cli(*args):
    return [sys.executable, "-m", "pc_ovseg", *map(str, args)]


def test_run_7scenes_interrupt_resume(shared_data, tiny_clip, tmp_path):
    model, weights = tiny_clip
    out = tmp_path / "out"
    cmd = _cli("run", shared_data / "7scenes-redkitchen", "--labels", "wall,floor,cabinet,table,other",
               "--out", out, "--max-views", 6, "--voxel-size", 0.05, "--clip-model", model,
               "--clip-weights", weights, "--no-progress", "--json")
    env = dict(os.environ, OMP_NUM_THREADS="2")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 600
    vis_files = []
    while time.time() < deadline and proc.poll() is None:
        vis_files = list(out.glob("cache/*/vis-*/*.npz"))
        if len(vis_files) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, f"run ended before it could be interrupted: {proc.communicate()}"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert len(err.strip().splitlines()) == 1 and "rerun to resume" in err
    cached_before = len(list(out.glob("cache/*/vis-*/*.npz")))
    assert cached_before >= 2

    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["views"] == 6
    assert summary["views_cached"] >= cached_before and summary["views_computed"] == 6 - summary["views_cached"]
    assert summary["coverage"] > 0.5

    # the PLY is a standard binary PLY with colour, label and score that other tools read
    from plyfile import PlyData
    ply = PlyData.read(str(out / "labels.ply"))
    v = ply["vertex"]
    names = v.data.dtype.names
    assert {"x", "y", "z", "red", "green", "blue", "label", "score"} <= set(names)
    assert len(v.data) == summary["points"]
    assert set(np.unique(v["label"])) <= set(range(-1, 5))
    assert (out / "legend.png").exists() and (out / "fused.npz").exists()

    # query the fused result: a heatmap file and an objects list
    q = subprocess.run(_cli("query", out / "fused.npz", "--text", "cabinet", "--out", out / "q", "--json"),
                       capture_output=True, text=True, env=env, timeout=300)
    assert q.returncode == 0, q.stderr
    res = json.loads(q.stdout)
    assert Path(res["files"][0]).exists() and "objects" in res

    # distil a small 3D student from the fused result, then finish the run with the 2D-3D ensemble
    ckpt = tmp_path / "student.pt"
    d = subprocess.run(_cli("distill", out / "fused.npz", "--out", ckpt, "--epochs", 2, "--voxel-size", 0.05,
                            "--planes", "8,8,8,8,8,8,8,8"), capture_output=True, text=True, env=env, timeout=600)
    assert d.returncode == 0, d.stderr
    ens = subprocess.run(cmd + ["--distilled", str(ckpt)], capture_output=True, text=True, env=env, timeout=900)
    assert ens.returncode == 0, ens.stderr
    s2 = json.loads(ens.stdout)
    assert s2["views_cached"] == 6                      # fusion fully reused from the cache
    assert s2["coverage_ensemble"] == 1.0               # the 3D model labels every point
    assert (out / "ensemble.npz").exists() and (out / "distilled.npz").exists()
    assert (PlyData.read(str(out / "labels.ply"))["vertex"]["label"] >= 0).all()


def test_run_reports_missing_weights_in_one_line(tmp_path):
    cmd = _cli("run", Path(__file__).resolve().parents[1] / "data" / "sample_room.ply", "--labels", "wall,floor",
               "--out", tmp_path, "--clip-weights", tmp_path / "missing.pt", "--max-views", 2)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing.pt" in lines[0], r.stderr


def test_rerun_reuses_the_camera_plan_and_every_view(shared_data, tiny_clip, tmp_path, monkeypatch):
    """A resumed run on a bare cloud neither plans cameras again nor recomputes a view."""
    from pc_ovseg import pipeline, views
    from pc_ovseg.config import EncoderConfig, OutputConfig, RunConfig
    model, weights = tiny_clip
    cfg = RunConfig(encoder=EncoderConfig(clip_model=model, clip_weights=weights, masks="superpixels", device="cpu"),
                    output=OutputConfig(labels="ground,building,vegetation", progress=False))
    src = shared_data / "las" / "sample_c.las"
    first = pipeline.run(str(src), tmp_path, cfg)
    assert first["views_computed"] == first["views"] >= 8 and len(list(tmp_path.glob("cache/plan_*.json"))) == 1

    def no_planning(*a, **k):
        raise AssertionError("planned again")
    monkeypatch.setattr(views.make, "plan_cameras", no_planning)
    again = pipeline.run(str(src), tmp_path, cfg)
    assert again["views_cached"] == first["views"] and again["views_computed"] == 0
    assert again["label_counts"] == first["label_counts"]
