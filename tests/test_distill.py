"""Distillation, prediction, ensemble, DDP and CLI on a real SemanticKITTI scan (tiny widths)."""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

import pc_ovseg
import pytest
import torch

from pc_ovseg.backbone.predict import ensemble, load_model, predict
from pc_ovseg.backbone.train import distill
from pc_ovseg.cli import main
from pc_ovseg.data import FeatureCloud, PointCloud
from pc_ovseg.errors import InputError

TINY = dict(planes=(8, 8, 16, 16, 8, 8, 8, 8), init_dim=8, init_kernel=3)
ROOT = Path(__file__).resolve().parents[1]
NAMES = ["unlabeled", "car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist",
         "motorcyclist", "road", "parking", "sidewalk", "other-ground", "building", "fence", "vegetation",
         "trunk", "terrain", "pole", "traffic-sign"]


def _crop(shared_data, x0: float, half: float = 7.0) -> FeatureCloud:
    """One-hot GT features on a crop of the scan; points with y < -2 count as unseen by cameras."""
    d = shared_data / "semantickitti"
    xyz = np.load(d / "points_000000.npy")
    lab = np.load(d / "labels_000000.npy").reshape(-1)
    sel = (np.abs(xyz[:, 0] - x0) < half) & (np.abs(xyz[:, 1]) < half)
    cloud = PointCloud(xyz[sel], fields={"label": lab[sel]}, source=str(d / "points_000000.npy"))
    lab = lab[sel]
    seen = (lab > 0) & (cloud.xyz[:, 1] > -2)
    feats = np.eye(len(NAMES), dtype=np.float16)[lab] * seen[:, None]
    return FeatureCloud(cloud, feats, seen.astype(np.float32), seen.astype(np.uint16),
                        "labels:" + ",".join(NAMES), NAMES)


@pytest.fixture(scope="module")
def scene(shared_data):
    return _crop(shared_data, 0.0)


def test_distill_learns_checkpoints_and_resumes(scene, tmp_path):
    ck = tmp_path / "model.pt"
    kw = dict(voxel_size=0.25, batch_size=1, lr=1e-2, model_overrides=TINY, progress=False)
    r1 = distill([scene], ck, epochs=2, **kw)
    assert r1.epochs == 2 and r1.steps == 2 and ck.exists()
    assert ck.with_suffix(".loss.csv").exists() and ck.with_suffix(".loss.png").exists()
    r2 = distill([scene], ck, epochs=10, **kw)  # resumes at epoch 2
    assert r2.epochs == 10 and r2.steps == 10
    hist = torch.load(ck, weights_only=False)["history"]
    assert [h["step"] for h in hist] == list(range(1, 11))
    first, last = hist[0]["loss"], np.mean([h["loss"] for h in hist[-3:]])
    assert last < 0.8 * first, (first, last)
    lines = ck.with_suffix(".loss.csv").read_text().splitlines()
    assert lines[0] == "epoch,step,loss,lr,started,seconds" and len(lines) == 11
    with pytest.raises(InputError, match="another architecture"):
        distill([scene], ck, epochs=11, voxel_size=0.25, model_overrides={**TINY, "planes": (8,) * 8})

    # prediction: a feature on every point (seen or not), in the training label space
    out = predict(ck, scene.cloud, tta=2)
    assert out.features.shape == scene.features.shape and out.features.dtype == np.float16
    np.testing.assert_allclose(np.linalg.norm(out.features.astype(np.float32), axis=1), 1, atol=1e-2)
    assert out.class_names == NAMES and out.encoder == scene.encoder and out.seen.all()
    assert out.meta["tta"] == 2
    d = load_model(ck)
    assert d.voxel_size == 0.25 and d.inputs == "ones"


def _loss_rows(ck: Path) -> list[dict]:
    with open(ck.with_suffix(".loss.csv"), newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _assert_matches_loss_file(r, ck: Path, rows: list[dict]) -> None:
    """Counts and loss of a run are those of its checkpoint and CSV (last epoch = last rows' epoch)."""
    ckpt = torch.load(ck, weights_only=True)
    last = int(rows[-1]["epoch"])
    assert r.steps == ckpt["steps"] == rows[-1]["step"] == len(rows)
    assert r.epochs == ckpt["epoch"] and r.loss_epoch == last and last in (r.epochs, r.epochs + 1)
    of_last = [h["loss"] for h in rows if h["epoch"] == last]
    assert r.loss_steps == len(of_last) and r.last_loss == pytest.approx(np.mean(of_last), rel=1e-9)


@pytest.fixture(scope="module")
def budget(scene, tmp_path_factory) -> float:
    """Minutes for setup plus about four steps, from the times a 2-step run recorded (that run
    also pays the process's one-off imports, e.g. torch._dynamo on the first AdamW)."""
    ck = tmp_path_factory.mktemp("warm") / "warm.pt"
    distill([scene] * 2, ck, epochs=1, voxel_size=0.5, batch_size=1, model_overrides=TINY, progress=False)
    rows = _loss_rows(ck)
    return round((rows[0]["started"] + 4 * max(h["seconds"] - h["started"] for h in rows)) / 60, 3) + 0.001


def test_time_budget_stops_within_a_step(scene, budget, tmp_path):
    """No step starts past the deadline, nor when the previous step's duration says it would end
    past it (times as the trainer recorded them, seconds since the run began)."""
    ck, minutes = tmp_path / "budget.pt", budget
    r = distill([scene] * 3, ck, epochs=100_000, voxel_size=0.5, batch_size=1, model_overrides=TINY,
                max_minutes=minutes, progress=False)
    rows = _loss_rows(ck)
    assert r.stopped_early and r.epochs < 100_000 and len(rows) >= 2
    deadline = 60 * minutes
    assert all(h["started"] <= deadline for h in rows)
    for prev, h in zip(rows, rows[1:]):
        assert h["started"] + (prev["seconds"] - prev["started"]) <= deadline + 2e-3  # CSV rounds to ms
    _assert_matches_loss_file(r, ck, rows)
    assert [h["step"] for h in torch.load(ck, weights_only=True)["history"]] == [h["step"] for h in rows]

    # a budget spent before the first step: no step, still a checkpoint to resume from
    r0 = distill([scene], tmp_path / "none.pt", epochs=5, voxel_size=0.5, model_overrides=TINY, max_minutes=0.0,
                 progress=False)
    assert r0.stopped_early and (r0.steps, r0.epochs, r0.loss_steps) == (0, 0, 0) and (tmp_path / "none.pt").exists()


def test_cli_budget_message_matches_loss_file(scene, budget, tmp_path, capsys):
    fused, ck = tmp_path / "fused.npz", tmp_path / "cli.pt"
    scene.save(fused)
    args = ["distill", str(fused), str(fused), "--out", str(ck), "--epochs", "100000", "--max-minutes", f"{budget:g}",
            "--voxel-size", "0.5", "--planes", "8,8,16,16,8,8,8,8", "--batch-size", "1"]
    assert main(args + ["--progress"]) == 0
    out, err = capsys.readouterr()
    rows = _loss_rows(ck)
    last = int(rows[-1]["epoch"])
    mean = np.mean([h["loss"] for h in rows if h["epoch"] == last])
    done = torch.load(ck, weights_only=True)["epoch"]
    assert f"wrote {ck}: {done} epochs" in out and f" {len(rows)} steps in " in out
    assert f"last epoch mean loss {mean:.4f} (epoch {last}," in out and f"time budget of {budget:g} min reached" in out
    assert re.search(r"distill: .* loss \d\.\d{4} time \d+:\d\d/\d+:\d\d", err)  # the bar: loss, time / budget


def test_ensemble_keeps_the_more_confident_feature():
    cloud = PointCloud(np.zeros((4, 3), np.float32))
    text = np.eye(3, dtype=np.float32)
    f2d = np.array([[1, 0, 0], [0.6, 0.8, 0], [0, 0, 0], [0, 0.6, 0.8]], np.float16)
    f3d = np.array([[0.6, 0.8, 0], [0, 1, 0], [0, 0, 1], [0, 0.8, 0.6]], np.float16)
    w2d = np.array([1, 1, 0, 1], np.float32)  # point 2 unseen
    fused = FeatureCloud(cloud, f2d, w2d, (w2d > 0).astype(np.uint16), "labels:a,b,c", ["a", "b", "c"])
    dist3 = FeatureCloud(cloud, f3d, np.ones(4, np.float32), np.zeros(4, np.uint16), "labels:a,b,c", ["a", "b", "c"])
    e = ensemble(fused, dist3, text)
    np.testing.assert_array_equal(e.features, np.stack([f2d[0], f3d[1], f3d[2], f2d[3]]))
    assert e.seen.all() and e.meta["ensemble"]["fraction_2d"] == 0.5


def test_ddp_two_processes_gloo(shared_data, tmp_path):
    """torchrun with 2 CPU processes (gloo): scenes split by rank, rank 0 writes the checkpoint."""
    for i, x0 in enumerate((-20.0, 20.0)):
        _crop(shared_data, x0, half=5.0).save(tmp_path / f"scene{i}.npz")
    script = tmp_path / "ddp_train.py"
    script.write_text(
        "import sys, torch\n"
        "from pc_ovseg.backbone.train import distill\n"
        f"r = distill(sys.argv[1:3], sys.argv[3], epochs=2, voxel_size=0.4, batch_size=1, lr=1e-2,\n"
        f"            device='cpu', model_overrides={TINY!r}, progress=False)\n"
        "import torch.distributed as dist\n"
        "import pathlib\n"
        "pathlib.Path(sys.argv[3] + f'.rank{dist.get_rank()}').write_text(\n"
        "    f'RANK {dist.get_rank()} WORLD {dist.get_world_size()} STEPS {r.steps}')\n"
        "dist.destroy_process_group()\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(pc_ovseg.__file__).resolve().parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    ck = tmp_path / "ddp.pt"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), str(tmp_path / "scene0.npz"), str(tmp_path / "scene1.npz"), str(ck)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # one file per rank: the two processes' stdout lines can interleave mid-line
    for rank in (0, 1):
        assert Path(f"{ck}.rank{rank}").read_text() == f"RANK {rank} WORLD 2 STEPS 2"
    ckpt = torch.load(ck, weights_only=False)
    assert ckpt["epoch"] == 2 and len(ckpt["history"]) == 2


def test_cli_distill_and_predict(scene, tmp_path, capsys):
    fused = tmp_path / "fused.npz"
    scene.save(fused)
    ck = tmp_path / "cli.pt"
    assert main(["distill", str(fused), "--out", str(ck), "--epochs", "1", "--voxel-size", "0.4",
                 "--planes", "8,8,16,16,8,8,8,8", "--batch-size", "1", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs"] == 1 and summary["checkpoint"] == str(ck)
    rows = _loss_rows(ck)
    assert summary["steps"] == len(rows) == summary["loss_steps"]
    assert summary["loss_file"] == str(ck.with_suffix(".loss.csv"))
    assert summary["loss_epoch"] == 1 and summary["loss"] == pytest.approx(np.mean([h["loss"] for h in rows]))
    out = tmp_path / "pred.npz"
    assert main(["predict", str(ck), str(fused), "--out", str(out), "--tta", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["points"] == len(scene.cloud)
    pred = FeatureCloud.load(out)
    assert pred.features.shape == scene.features.shape and pred.class_names == NAMES
    # bad input: one line, exit 2
    assert main(["predict", str(tmp_path / "missing.pt"), str(fused), "--out", str(out)]) == 2
    assert main(["predict", str(fused), str(fused), "--out", str(out)]) == 2
    assert main(["distill", str(fused), "--out", str(ck), "--planes", "8,8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("pc-ovseg ") for line in err)


def test_voxel_inputs_and_targets(scene):
    from pc_ovseg.backbone.inputs import input_channels, voxelize_scene
    assert input_channels("ones+height+color") == 5
    with pytest.raises(InputError, match="colour"):
        voxelize_scene(scene.cloud, 0.3, "color")
    rgb = np.full((len(scene.cloud), 3), 255, np.uint8)
    coloured = PointCloud(scene.cloud.xyz, rgb)
    vs = voxelize_scene(coloured, 0.3, "color+height")
    assert vs.feats.shape == (len(vs.coords), 4)
    np.testing.assert_allclose(vs.feats[:, :3], 0.5)
    vs = voxelize_scene(scene.cloud, 0.3, "ones", features=scene.features, seen=scene.seen)
    seen_voxels = np.unique(vs.inverse[scene.seen])
    assert set(np.flatnonzero(vs.valid)) == set(seen_voxels)
    np.testing.assert_allclose(np.linalg.norm(vs.target[vs.valid], axis=1), 1, atol=1e-5)
    # a voxel's target is its seen points' mean feature: the majority label wins
    v = seen_voxels[0]
    members = np.flatnonzero((vs.inverse == v) & scene.seen)
    counts = np.bincount(scene.features[members].astype(np.float32).argmax(1), minlength=len(NAMES))
    assert vs.target[v].argmax() == counts.argmax()
