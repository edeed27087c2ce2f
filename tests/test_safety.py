"""Checkpoints cannot run code: a crafted ``.pt`` is refused, unexecuted, by every command that
reads one (predict, distill resuming from --out, run --distilled, --clip-weights, --sam-checkpoint)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pc_ovseg.errors import InputError
from pc_ovseg.store import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


class _Payload:
    """Unpickling this calls os.system: the marker file appears if any loader executes it."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pt"
    # wrapped like a real pc_ovseg checkpoint, so format sniffing alone would not stop it
    torch.save({"format": "pc_ovseg.distill/1", "model": {}, "payload": _Payload(marker)}, path)
    return path, marker


@pytest.fixture
def small_cloud(tmp_path):
    rng = np.random.default_rng(0)
    xyz = rng.uniform(0, 2, (400, 3)).astype(np.float32)
    p = tmp_path / "cloud.npy"
    np.save(p, xyz)
    return p


def _cli(*args, timeout=300):
    env = {**os.environ}
    env.pop("PC_OVSEG_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "pc_ovseg", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_loader_refuses_pickled_code(evil):
    path, marker = evil
    with pytest.raises(InputError, match="refused") as ei:
        load_checkpoint(path)
    assert "\n" not in str(ei.value) and str(path) in str(ei.value)
    assert not marker.exists()


def test_loader_reads_plain_checkpoints_and_rejects_truncated(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(3), "meta": {"a": [1, 2.5, "x", None, (1, 2)]}}, good)
    assert load_checkpoint(good)["meta"]["a"][1] == 2.5
    bad = tmp_path / "trunc.pt"
    bad.write_bytes(good.read_bytes()[:100])
    with pytest.raises(InputError, match="truncated or not a PyTorch file"):
        load_checkpoint(bad)


def _commands(evil_pt: Path, cloud: Path, tmp: Path) -> dict[str, list]:
    room = ROOT / "data" / "sample_room.ply"
    fused = tmp / "scene.npz"
    _fused_file(cloud, fused)
    common = ["--max-views", 1, "--clip-model", "pcovseg-tiny-ViT", "--masks", "superpixels", "--device", "cpu"]
    return {
        "predict": ["predict", evil_pt, cloud, "--out", tmp / "p.npz"],
        "distill-resume": ["distill", fused, "--out", _copy(evil_pt, tmp / "resume.pt"), "--epochs", 1],
        "run-distilled": ["run", room, "--labels", "wall,floor", "--out", tmp / "r1", "--distilled", evil_pt,
                          "--clip-weights", "none", *common],
        "run-clip-weights": ["run", room, "--labels", "wall,floor", "--out", tmp / "r2", "--clip-weights", evil_pt,
                             *common],
        "fuse-sam": ["fuse", room, "--out", tmp / "r3", "--clip-weights", "none", "--sam-checkpoint", evil_pt,
                     *[c if c != "superpixels" else "sam3d" for c in common]],
    }


def _copy(src: Path, dst: Path) -> Path:
    dst.write_bytes(src.read_bytes())
    return dst


def _fused_file(cloud: Path, out: Path) -> None:
    from pc_ovseg.data import FeatureCloud, PointCloud
    xyz = np.load(cloud)
    f = np.zeros((len(xyz), 8), np.float16)
    f[:, 0] = 1
    FeatureCloud(PointCloud(xyz), f, np.ones(len(xyz), np.float32), np.ones(len(xyz), np.uint16)).save(out)


@pytest.mark.parametrize("command", ["predict", "distill-resume", "run-distilled", "run-clip-weights", "fuse-sam"])
def test_every_command_refuses_a_malicious_checkpoint(command, evil, small_cloud, tmp_path):
    evil_pt, marker = evil
    r = _cli(*_commands(evil_pt, small_cloud, tmp_path)[command])
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and "refused" in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert not marker.exists(), "the checkpoint's code ran"


@pytest.mark.parametrize("first,second", [(2000, 300), (300, 2000)])
def test_resume_after_the_input_changed_in_place_recomputes(first, second, tmp_path):
    """The cache is keyed by the input's content: a cloud replaced at the same path (smaller or
    larger) gets fresh views, never another cloud's (an IndexError, or a silently low coverage)."""
    from pc_ovseg import io as pio
    from pc_ovseg import pipeline
    from pc_ovseg.config import EncoderConfig, OutputConfig, RunConfig, ViewsConfig
    from pc_ovseg.encoders import make_tiny_clip_checkpoint

    room = pio.read(str(ROOT / "data" / "sample_room.ply"))
    rng = np.random.default_rng(0)
    spec = make_tiny_clip_checkpoint(tmp_path / "tiny.pt")
    cfg = RunConfig(views=ViewsConfig(max_views=4, min_views=1),
                    encoder=EncoderConfig(clip_model=spec.split(":")[1], clip_weights=str(tmp_path / "tiny.pt"),
                                          masks="superpixels", device="cpu"),
                    output=OutputConfig(labels="wall,floor,chair", progress=False, formats=["npz"]))
    src, out = tmp_path / "scan.npy", tmp_path / "out"
    results = []
    for n in (first, second):
        np.save(src, room.world_xyz[rng.choice(len(room), n, replace=False)].astype(np.float32))
        results.append(pipeline.run(str(src), out, cfg))
    a, b = results
    assert b["points"] == second and b["views_cached"] == 0 and b["views_computed"] == b["views"]
    assert b["coverage"] > 0.5 and a["coverage"] > 0.5
    again = pipeline.run(str(src), out, cfg)  # unchanged content: every view from the cache
    assert again["views_cached"] == again["views"] and again["coverage"] == b["coverage"]
