"""``pc-ovseg bench --instances``: a ScanNet split in its official layout (.sens frames, segs +
aggregation from the real scene0000_00), instances per scene from the views' 2D masks (the GT
instances with --oracle), the split scored by instance AP as ScanNet's script scores it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pc_ovseg
from dataset_fixtures import write_scannet
from pc_ovseg.bench import run_bench
from pc_ovseg.config import BenchConfig, RunConfig
from pc_ovseg.errors import InputError

PKG_PARENT = Path(pc_ovseg.__file__).resolve().parents[1]
SCENES = ("scene0000_00", "scene0000_02")


@pytest.fixture(scope="module")
def root(tmp_path_factory, shared_data) -> Path:
    return write_scannet(tmp_path_factory.mktemp("scannet_inst"), shared_data, SCENES, frames=60)


def _cfg() -> RunConfig:
    cfg = RunConfig()
    cfg.output.progress = False
    cfg.instances.enabled = True
    return cfg


def test_oracle_split_instance_ap(root, tmp_path):
    s = run_bench("scannet", root, tmp_path, _cfg(), BenchConfig(oracle=True))
    assert s["scenes_done"] == 2 and s["instance_scenes"] == 2
    assert "wall" not in s["instance_classes"] and "floor" not in s["instance_classes"]
    agn, sem = s["instance_ap_class_agnostic"], s["instance_ap"]
    assert agn["ap50"] >= 0.8 and agn["ap25"] >= 0.85, agn
    assert sem["ap50"] >= 0.7, sem
    for n in SCENES:
        for f in ("instances.npz", "instances.ply", "instances.json", "instance_eval.npz"):
            assert (tmp_path / n / f).is_file()
    md = (tmp_path / "results.md").read_text()
    assert "| instances | AP | AP50 | AP25 |" in md
    again = run_bench("scannet", root, tmp_path, _cfg(), BenchConfig(oracle=True))   # resumes, same AP
    assert again["scenes_cached"] == 2 and again["instance_ap"] == sem
    plain = RunConfig()
    plain.output.progress = False
    other = run_bench("scannet", root, tmp_path, plain, BenchConfig(oracle=True))   # instances off: a new key
    assert other["scenes_cached"] == 0 and "instance_ap" not in other


def test_instances_need_view_masks(root, tmp_path):
    (tmp_path / "f").mkdir()
    with pytest.raises(InputError, match="--instances needs each view's 2D masks"):
        run_bench("scannet", root, tmp_path / "o", _cfg(), BenchConfig(features=f"precomputed:{tmp_path / 'f'}"))


def test_cli_scannet200_instances(root, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PKG_PARENT), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run([sys.executable, "-m", "pc_ovseg", "bench", "scannet", "--root", str(root), "--out",
                        str(tmp_path / "o"), "--oracle", "--scenes", "scene0000_02", "--labels", "scannet200",
                        "--instances"], capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stderr
    assert "instances: AP" in p.stdout
    md = (tmp_path / "o" / "results.md").read_text()
    assert "Open-YOLO 3D" in md and "OpenMask3D" in md   # published instance AP beside ours


def test_tiled_scenes_get_instances_and_ap(tmp_path_factory, shared_data, tmp_path):
    """A SemanticKITTI scan (frame-less: rendered views) bigger than a tile: instances per tile,
    joined over the seams, scored with the split (things only: stuff has no instance ids)."""
    from dataset_fixtures_other import write_semantickitti
    root = tmp_path_factory.mktemp("kitti_inst") / "dataset"
    write_semantickitti(root, shared_data)
    cfg = _cfg()
    cfg.scale.tile_points = 60_000
    s = run_bench("semantickitti", root, tmp_path, cfg, BenchConfig(oracle=True, split="val", scenes="08_000000"))
    assert s["scenes_done"] == 1 and s["instance_scenes"] == 1, s["failed"]
    r = json.loads((tmp_path / "08_000000" / "result.json").read_text())
    assert r["tiles"] >= 2
    assert (tmp_path / "08_000000" / "instances.ply").is_file()
    agn = s["instance_ap_class_agnostic"]
    assert agn["ap50"] >= 0.5, agn
