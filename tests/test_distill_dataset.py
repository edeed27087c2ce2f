"""Distillation over scene directories (pc_ovseg.backbone.dataset) on crops of real SemanticKITTI scans."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import pc_ovseg
from pc_ovseg.backbone.dataset import (CropConfig, LazyScene, _prefetch, list_scenes, make_sample, sphere_crop,
                                       train_dataset, validate)
from pc_ovseg.backbone.inputs import Augment, voxel_majority
from pc_ovseg.backbone.model import MinkUNet, unet_spec
from pc_ovseg.backbone.predict import ensemble, load_model
from pc_ovseg.backbone.sparse import SparseBatchNorm, SparseSyncBatchNorm, SparseTensor, convert_sync_batchnorm
from pc_ovseg.backbone.train import distill_loss
from pc_ovseg.cli import main
from pc_ovseg.data import FeatureCloud, PointCloud
from pc_ovseg.errors import InputError

TINY = dict(planes=(8, 8, 16, 16, 8, 8, 8, 8), init_dim=8, init_kernel=3)
NAMES = ["ignore", "car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist",
         "motorcyclist", "road", "parking", "sidewalk", "other-ground", "building", "fence", "vegetation",
         "trunk", "terrain", "pole", "traffic-sign"]


def _scene(shared_data, x0: float, half: float = 8.0, frame: str = "000000") -> FeatureCloud:
    """One-hot GT features on a crop of a scan (GT kept as field 'label'); y < -2 counts as unseen."""
    d = shared_data / "semantickitti"
    xyz = np.load(d / f"points_{frame}.npy")
    lab = np.load(d / f"labels_{frame}.npy").reshape(-1)
    sel = (np.abs(xyz[:, 0] - x0) < half) & (np.abs(xyz[:, 1]) < half)
    lab = lab[sel]
    cloud = PointCloud(xyz[sel], fields={"label": lab.astype(np.int32)})
    seen = (lab > 0) & (cloud.xyz[:, 1] > -2)
    feats = np.eye(len(NAMES), dtype=np.float16)[lab] * seen[:, None]
    return FeatureCloud(cloud, feats, seen.astype(np.float32), seen.astype(np.uint16),
                        "labels:" + ",".join(NAMES), NAMES)


@pytest.fixture(scope="module")
def dirs(shared_data, tmp_path_factory):
    base = tmp_path_factory.mktemp("scenes")
    (base / "train").mkdir()
    (base / "val" / "sceneA").mkdir(parents=True)  # bench layout: <scene>/fused.npz
    for i, x0 in enumerate((-20.0, 0.0, 20.0)):
        _scene(shared_data, x0).save(base / "train" / f"s{i}.npz")
    _scene(shared_data, 10.0, frame="000001").save(base / "val" / "sceneA" / "fused.npz")
    return base


def test_lazy_scene_maps_the_file_and_crops_read_rows(dirs):
    p = dirs / "train" / "s0.npz"
    fc = FeatureCloud.load(p)
    ls = LazyScene(p)
    xyz = ls.array("xyz")
    assert isinstance(xyz, np.memmap) and np.array_equal(np.asarray(xyz), fc.cloud.xyz)
    assert np.array_equal(np.asarray(ls.array("features")), fc.features)
    assert ls.fields() == ["label"] and ls.class_names == NAMES
    rng = np.random.default_rng(0)
    idx = sphere_crop(fc.cloud.xyz, 1000, rng)
    assert len(idx) == 1000 and np.all(np.diff(idx) > 0)
    # the crop is the 1000 points nearest its centre: every outside point is at least as far
    c = None
    d = None
    inside = np.zeros(len(fc.cloud), bool)
    inside[idx] = True
    for k in idx:  # the centre is one of the crop's points: find one consistent with the crop
        dd = ((fc.cloud.xyz - fc.cloud.xyz[k]) ** 2).sum(1)
        if dd[inside].max() <= dd[~inside].min():
            c, d = k, dd
            break
    assert c is not None and d is not None
    assert len(sphere_crop(fc.cloud.xyz, 10 ** 7, rng)) == len(fc.cloud)


def test_samples_voxel_labels_mix_and_dropout(dirs):
    paths = list_scenes(dirs / "train")
    rng = np.random.default_rng(1)
    s = make_sample(paths, 0, rng, CropConfig(point_budget=3000), 0.2, "ones", Augment())
    assert s.labels is not None and len(s.labels) == len(s.coords) and s.valid.any()
    # a voxel's label is the majority of its points' labels; -1 where none has one
    assert list(voxel_majority(np.array([2, 2, 5, -1, -1]), np.array([0, 0, 0, 1, 2]), 3)) == [2, -1, -1]
    mixed = make_sample(paths, 0, np.random.default_rng(1), CropConfig(point_budget=3000, mix=True), 0.2, "ones",
                        Augment())
    assert len(mixed.inverse) == 6000
    dropped = make_sample(paths, 0, np.random.default_rng(1), CropConfig(point_budget=3000, dropout=0.5), 0.2,
                          "ones", Augment())
    assert 1000 < len(dropped.inverse) < 2000


def test_list_scenes_and_bad_directories(dirs, tmp_path):
    assert [p.name for p in list_scenes(dirs / "train")] == ["s0.npz", "s1.npz", "s2.npz"]
    assert [p.parent.name for p in list_scenes(dirs / "val")] == ["sceneA"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no fused scenes"):
        list_scenes(tmp_path / "empty")
    with pytest.raises(InputError, match="is not a directory"):
        list_scenes(tmp_path / "nothing")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a pc_ovseg feature file"):
        LazyScene(tmp_path / "junk" / "a.npz")


def test_prefetch_runs_ahead_and_reraises():
    made = []

    def make(k):
        made.append(k)
        if k == 3:
            raise ValueError("boom")
        return k

    it = _prefetch(make, 5, depth=2)
    assert next(it) == 0
    with pytest.raises(ValueError, match="boom"):
        list(it)


def test_losses():
    torch.manual_seed(0)
    pred = torch.randn(50, 4, requires_grad=True)
    target = torch.nn.functional.one_hot(torch.arange(50) % 4, 4).float()
    valid = torch.ones(50, dtype=torch.bool)
    cos = distill_loss("cosine", pred, target, valid)
    both = distill_loss("cosine+contrast", pred, target, valid, vocab=torch.eye(4))
    assert float(both) > float(cos) > 0
    labels = torch.arange(50) % 4
    labels[:10] = -1
    ce = distill_loss("ce", pred, None, None, labels)
    assert torch.isclose(ce, torch.nn.functional.cross_entropy(pred[10:], labels[10:]))
    # perfect predictions: no cosine loss, a small contrastive one
    assert float(distill_loss("cosine", target * 5, target, valid)) < 1e-6


def test_train_dataset_validates_keeps_best_and_resumes(dirs, tmp_path):
    ck = tmp_path / "m.pt"
    kw = dict(val=dirs / "val", epochs=2, steps_per_epoch=3, voxel_size=0.25, crop=CropConfig(point_budget=4000),
              model_overrides=TINY, device="cpu", progress=False, lr=1e-2, loss="cosine+contrast", cpu_budget=True)
    r = train_dataset(dirs / "train", ck, **kw)
    assert r.steps == 6 and r.epochs == 2 and len(r.validation) == 2
    assert all(v["metric"] == "miou" and 0 <= v["value"] <= 1 for v in r.validation)
    assert r.best["value"] == max(v["value"] for v in r.validation)
    best = Path(r.best["checkpoint"])
    assert best.is_file() and load_model(best).voxel_size == 0.25
    assert (tmp_path / "m.val.csv").read_text().count("\n") == 3
    assert (tmp_path / "m.loss.png").is_file()
    ckpt = torch.load(ck, weights_only=True)  # plain data only
    assert ckpt["loss"] == "cosine+contrast" and ckpt["crop"]["point_budget"] == 4000
    # resuming to 3 epochs runs one more and keeps the earlier validations
    r2 = train_dataset(dirs / "train", ck, **{**kw, "epochs": 3})
    assert r2.steps == 9 and len(r2.validation) == 3
    # the poly schedule by steps ends at lr 0
    assert torch.load(ck, weights_only=True)["history"][-1]["lr"] < 1e-2 * 0.2


def test_cosine_validation_without_gt(dirs, tmp_path):
    fc = FeatureCloud.load(dirs / "val" / "sceneA" / "fused.npz")
    fc.cloud = PointCloud(fc.cloud.xyz)
    (tmp_path / "v").mkdir()
    fc.save(tmp_path / "v" / "x.npz")
    model = MinkUNet(unet_spec("MinkUNet18A", in_channels=1, out_channels=len(NAMES), **TINY))
    v = validate(model, list_scenes(tmp_path / "v"), voxel_size=0.25, inputs="ones")
    assert v.metric == "cosine" and -1 <= v.value <= 1 and model.training


def test_supervised_upper_bound_path(dirs, tmp_path):
    r = train_dataset(dirs / "train", tmp_path / "s.pt", epochs=1, steps_per_epoch=2, voxel_size=0.25,
                      crop=CropConfig(point_budget=3000), model_overrides=TINY, device="cpu", progress=False,
                      loss="ce")
    assert r.steps == 2 and np.isfinite(r.last_loss)
    assert load_model(tmp_path / "s.pt").model.spec.out_channels == len(NAMES)


def test_dataloader_worker_process(dirs, tmp_path):
    r = train_dataset(dirs / "train", tmp_path / "w.pt", epochs=1, steps_per_epoch=2, voxel_size=0.25,
                      crop=CropConfig(point_budget=3000), model_overrides=TINY, device="cpu", progress=False,
                      workers=1)
    assert r.steps == 2


def test_sync_batchnorm_outside_a_group_is_batchnorm():
    torch.manual_seed(0)
    bn = SparseBatchNorm(4)
    m = convert_sync_batchnorm(torch.nn.Sequential(bn))
    assert isinstance(m[0], SparseSyncBatchNorm)
    x = SparseTensor(torch.randn(30, 4), torch.zeros(30, 4, dtype=torch.int32))
    assert torch.allclose(m[0](x).feats, SparseBatchNorm(4)(x).feats)


def test_ddp_sync_batchnorm_gloo(dirs, tmp_path):
    """torchrun, 2 CPU processes: dataset split by rank, batch-norm statistics synchronised (every
    rank ends with the same running mean although each saw other crops), rank 0 validates."""
    script = tmp_path / "ddp.py"
    script.write_text(
        "import sys, torch, torch.distributed as dist\n"
        "from pc_ovseg.backbone.dataset import train_dataset, CropConfig\n"
        f"r = train_dataset(sys.argv[1], sys.argv[3], val=sys.argv[2], epochs=2, steps_per_epoch=2,\n"
        f"    voxel_size=0.3, crop=CropConfig(point_budget=3000), device='cpu', model_overrides={TINY!r},\n"
        "    progress=False, lr=1e-2)\n"
        "import pathlib\n"
        "pathlib.Path(sys.argv[3] + f'.rank{dist.get_rank()}').write_text(str(r.steps))\n"
        "dist.destroy_process_group()\n")
    # the running statistics of each rank, dumped by a wrapper around Trainer.save
    wrapper = tmp_path / "wrap.py"
    wrapper.write_text(
        "import sys, runpy, torch, torch.distributed as dist\n"
        "from pc_ovseg.backbone import train\n"
        "from pc_ovseg.backbone.sparse import SparseSyncBatchNorm\n"
        "orig = train.Trainer.save\n"
        "def save(self):\n"
        "    kinds = {type(m).__name__ for m in self.model.modules() if 'BatchNorm' in type(m).__name__}\n"
        "    torch.save({'kinds': sorted(kinds), 'rm': self.model.bn0.running_mean.clone()},\n"
        "               sys.argv[3] + f'.bn{dist.get_rank()}')\n"
        "    orig(self)\n"
        "train.Trainer.save = save\n"
        f"sys.argv = [{str(script)!r}] + sys.argv[1:]\n"
        f"runpy.run_path({str(script)!r}, run_name='__main__')\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(pc_ovseg.__file__).resolve().parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    ck = tmp_path / "ddp.pt"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(wrapper), str(dirs / "train"), str(dirs / "val"), str(ck)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        assert Path(f"{ck}.rank{rank}").read_text() == "4"
    b0, b1 = (torch.load(f"{ck}.bn{r}", weights_only=True) for r in (0, 1))
    assert b0["kinds"] == ["SparseSyncBatchNorm"]
    assert torch.allclose(b0["rm"], b1["rm"], atol=1e-6) and float(b0["rm"].abs().sum()) > 0
    val = json.loads((tmp_path / "ddp.val.json").read_text())
    assert len(val["rows"]) == 2 and Path(val["best"]["checkpoint"]).is_file()


def test_ensemble_fill_mode():
    cloud = PointCloud(np.zeros((3, 3), np.float32))
    eye = np.eye(2, dtype=np.float32)
    fused = FeatureCloud(cloud, np.array([[0.6, 0.8], [1, 0], [0, 0]], np.float16), np.array([1, 1, 0], np.float32),
                         np.array([1, 1, 0], np.uint16))
    dist3 = FeatureCloud(cloud, np.array([[0, 1], [0, 1], [1, 0]], np.float16), np.ones(3, np.float32),
                         np.zeros(3, np.uint16))
    score = ensemble(fused, dist3, eye).features.astype(np.float32)
    fill = ensemble(fused, dist3, eye, mode="fill").features.astype(np.float32)
    assert np.allclose(score[0], [0, 1]) and np.allclose(fill[0], [0.6, 0.8], atol=1e-3)
    assert np.allclose(fill[2], [1, 0]) and np.allclose(score[1], [1, 0])


def test_cli_distill_dataset(dirs, tmp_path, capsys):
    out = tmp_path / "cli.pt"
    rc = main(["distill", "--dataset", str(dirs / "train"), "--val", str(dirs / "val"), "--out", str(out),
               "--epochs", "1", "--steps-per-epoch", "2", "--voxel-size", "0.3", "--point-budget", "3000",
               "--planes", "8,8,16,16,8,8,8,8", "--device", "cpu", "--json", "--preset", "openscene-outdoor",
               "--lr", "0.01"])
    assert rc == 0
    s = json.loads(capsys.readouterr().out)
    assert s["steps"] == 2 and s["best"]["metric"] == "miou" and s["validations"] == 1
    ck = torch.load(out, weights_only=True)
    assert ck["voxel_size"] == 0.3 and ck["arch"] == "MinkUNet18A"
    assert ck["history"][0]["lr"] <= 0.01  # --lr wins over the preset's
    assert main(["distill", "--out", str(out)]) == 2
    assert "give fused files or --dataset" in capsys.readouterr().err
    assert main(["distill", "--dataset", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "is not a directory of fused scenes" in capsys.readouterr().err
