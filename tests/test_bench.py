"""``pc-ovseg bench`` over a ScanNet split in its official layout (three scenes with .sens
frames, written once per module from the real labelled scene0000_00): oracle scores, the
benchmark's own files, resume, local vs Ray, a bad scene, OpenScene feature files, the CLI."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pc_ovseg
from dataset_fixtures import write_scannet
from pc_ovseg.bench import run_bench
from pc_ovseg.config import BenchConfig, RunConfig
from pc_ovseg.data import FeatureCloud
from pc_ovseg.errors import InputError
from pc_ovseg.eval import evaluate
from pc_ovseg.labels import load_labelset, remap_labels

PKG_PARENT = Path(pc_ovseg.__file__).resolve().parents[1]
SCENES = ("scene0000_00", "scene0000_01", "scene0000_02")


@pytest.fixture(scope="module")
def root(tmp_path_factory, shared_data) -> Path:
    return write_scannet(tmp_path_factory.mktemp("scannet"), shared_data, SCENES, frames=60)


def _cfg(**scale) -> RunConfig:
    cfg = RunConfig()
    cfg.output.progress = False
    for k, v in scale.items():
        setattr(cfg.scale, k, v)
    return cfg


@pytest.fixture(scope="module")
def oracle_run(root, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_oracle")
    return out, run_bench("scannet", root, out, _cfg(), BenchConfig(oracle=True))


def _cli(*argv) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PKG_PARENT), os.environ.get("PYTHONPATH", "")])}
    env.pop("PC_OVSEG_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "pc_ovseg", *map(str, argv)], capture_output=True, text=True,
                          timeout=600, env=env)


def _confusion(out: Path, scene: str) -> np.ndarray:
    return np.asarray(json.loads((out / scene / "result.json").read_text())["confusion"])


def test_oracle_split(oracle_run, root):
    out, s = oracle_run
    assert s["scenes"] == s["scenes_done"] == 3 and not s["failed"]
    assert s["coverage"] >= 0.99 and s["miou"] >= 0.95, (s["coverage"], s["miou"])
    assert s["per_class"]["wall"]["iou"] > 0.9 and s["per_class"]["floor"]["iou"] > 0.9
    r0, r1 = (json.loads((out / n / "result.json").read_text()) for n in SCENES[:2])
    # scene0000_01 is scene0000_00 turned and shifted with its frames: the same numbers
    assert r0["views"] == r1["views"] == 60 and abs(r0["miou"] - r1["miou"]) < 2e-3
    assert r0["peak_rss_mb"] > 100 and r0["seconds"] > 0
    # the split's confusion is the sum of the scenes'
    assert np.array_equal(np.asarray(s["confusion"]), sum(_confusion(out, n) for n in SCENES))
    for f in ("results.json", "results.md", "iou.png"):
        assert (out / f).stat().st_size > 0
    md = (out / "results.md").read_text()
    assert "OpenScene" in md and "pc_ovseg (this run)" in md


def test_benchmark_files_score_as_the_run(oracle_run, root):
    """<scene>.txt (NYU40 ids, ScanNet's evaluate_semantic_label.py input) gives the run's numbers."""
    out, _ = oracle_run
    from pc_ovseg.io.ply import read_ply
    ls = load_labelset("scannet20")
    for name in SCENES:
        raw = np.loadtxt(out / name / f"{name}.txt", dtype=np.int64)
        gt_raw = read_ply(root / "scans" / name / f"{name}_vh_clean_2.labels.ply").fields["label"]
        assert len(raw) == len(gt_raw) and raw.min() >= 0 and raw.max() <= 40
        res = evaluate(remap_labels(raw, ls), remap_labels(gt_raw, ls), ls)
        assert np.array_equal(res.confusion, _confusion(out, name)), name


def test_resume_and_settings(oracle_run, root, tmp_path):
    out, s = oracle_run
    again = run_bench("scannet", root, out, _cfg(), BenchConfig(oracle=True))
    assert again["scenes_cached"] == 3 and again["miou"] == s["miou"] and again["seconds"] < 5
    # a setting that changes the numbers runs again; the noisy oracle scores lower
    shutil.copytree(out, tmp_path / "out")   # (the module's run stays as it is for the other tests)
    noisy = run_bench("scannet", root, tmp_path / "out", _cfg(),
                      BenchConfig(oracle=True, noise=0.3, scenes="scene0000_02"))
    assert noisy["scenes_cached"] == 0 and noisy["scenes"] == 1
    assert noisy["miou"] < s["scene_results"]["scene0000_02"]["miou"] - 0.02


def test_ray_equals_local(oracle_run, root, tmp_path):
    out, s = oracle_run
    r = run_bench("scannet", root, tmp_path / "ray", _cfg(executor="ray", workers=2), BenchConfig(oracle=True))
    assert r["scenes_done"] == 3 and r["executor"] == "ray"
    for n in SCENES:
        assert np.array_equal(_confusion(tmp_path / "ray", n), _confusion(out, n)), n
    pids = {json.loads((tmp_path / "ray" / n / "result.json").read_text())["worker_pid"] for n in SCENES}
    assert os.getpid() not in pids


def test_a_bad_scene_is_retried_reported_and_skipped(root, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(root, broken, symlinks=True)
    labels = broken / "scans" / "scene0000_02" / "scene0000_02_vh_clean_2.labels.ply"
    data = labels.read_bytes()
    labels.write_bytes(data[: len(data) // 2])    # truncated: its vertex count no longer holds
    s = run_bench("scannet", broken, tmp_path / "out", _cfg(retries=1), BenchConfig(oracle=True))
    assert s["scenes_done"] == 2 and s["scenes_failed"] == 1
    f = s["failed"]["scene0000_02"]
    assert f["attempts"] == 2 and "scene0000_02_vh_clean_2.labels.ply" in f["error"] and "\n" not in f["error"]
    assert "scene0000_02" in (tmp_path / "out" / "results.md").read_text()


def test_openscene_feature_files_score_as_the_oracle(oracle_run, root, tmp_path):
    """OpenScene's per-scene fused features (fp16 ``feat`` of the ``mask_full`` points, a .pt)."""
    import torch
    out, s = oracle_run
    feats = tmp_path / "openscene"
    feats.mkdir()
    names = None
    for n in SCENES:
        fc = FeatureCloud.load(out / n / "fused.npz")
        names = fc.class_names
        mask = fc.weight > 0
        torch.save({"feat": torch.from_numpy(np.asarray(fc.features[mask], np.float16)),
                    "mask_full": torch.from_numpy(mask)}, feats / f"{n}_0.pt")
    r = run_bench("scannet", root, tmp_path / "pre", _cfg(),
                  BenchConfig(features=f"precomputed:{feats}", features_encoder="labels:" + ",".join(names)))
    assert r["scenes_done"] == 3
    for n in SCENES:
        assert np.array_equal(_confusion(tmp_path / "pre", n), _confusion(out, n)), n


def test_bad_requests_are_one_line(root, tmp_path):
    for bench, what in ((BenchConfig(oracle=True, split="tets"), "splits"),
                        (BenchConfig(oracle=True, scenes="scene9999_00"), "scene9999_00"),
                        (BenchConfig(oracle=True, features="precomputed:/nonexistent"), "give one"),
                        (BenchConfig(features="precomputed:/nonexistent"), "not found")):
        with pytest.raises(InputError) as e:
            run_bench("scannet", root, tmp_path / "x", _cfg(), bench)
        assert what in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(InputError, match="scored in"):
        run_bench("scannet", root, tmp_path / "x", _labels("asprs"), BenchConfig(oracle=True))


def _labels(name: str) -> RunConfig:
    cfg = _cfg()
    cfg.output.labels = name
    return cfg


def test_cli(root, tmp_path):
    p = _cli("bench", "scannet", "--root", root, "--out", tmp_path / "o", "--oracle", "--scenes", "scene0000_02",
             "--labels", "scannet200", "--json")
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    assert s["labelset"] == "scannet200" and s["scenes_done"] == 1 and s["miou"] > 0.7
    assert set(s["groups"]) == {"head", "common", "tail"}
    p = _cli("bench", "scannet", "--root", tmp_path / "nowhere", "--out", tmp_path / "o2", "--oracle")
    assert p.returncode != 0 and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
