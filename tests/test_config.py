"""The typed run configuration and the defects it removed: specs that rebuild, CLIP loaded once,
one cache key for every entry point, atomic results, the device reaching the distilled model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pc_ovseg.config import EncoderConfig, OutputConfig, RunConfig, ViewsConfig
from pc_ovseg.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from pc_ovseg.encoders import make_tiny_clip_checkpoint
    path = tmp_path_factory.mktemp("w") / "tiny.pt"
    spec = make_tiny_clip_checkpoint(path)
    return spec.split(":")[1], str(path)


def _cfg(tiny, **out) -> RunConfig:
    model, weights = tiny
    return RunConfig(views=ViewsConfig(max_views=3, min_views=1),
                     encoder=EncoderConfig(clip_model=model, clip_weights=weights, masks="superpixels", device="cpu"),
                     output=OutputConfig(labels="wall,floor,chair", progress=False, formats=["npz"], **out))


def test_round_trip_and_unknown_keys(tmp_path):
    cfg = RunConfig(views=ViewsConfig(zoom=3))
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    (tmp_path / "run.yaml").write_text(cfg.dump())
    assert RunConfig.load(tmp_path / "run.yaml") == cfg
    with pytest.raises(InputError, match="unknown option views.zom"):
        RunConfig.from_dict({"views": {"zom": 3}})
    with pytest.raises(InputError, match="--zoom"):
        ViewsConfig(zoom=0)
    with pytest.raises(InputError, match="fusion.segments"):
        RunConfig.from_dict({"fusion": {"segments": "lots"}})


@pytest.mark.parametrize("rest,model,weights", [
    ("hf-hub:timm/ViT-B-16-SigLIP:openai", "hf-hub:timm/ViT-B-16-SigLIP", "openai"),
    ("local-dir:/models/clip:none", "local-dir:/models/clip", "none"),
    ("ViT-B-16:/w/a.pt", "ViT-B-16", "/w/a.pt"),
    ("ViT-B-16", "ViT-B-16", "openai"),
])
def test_clip_specs_with_colons_rebuild(rest, model, weights, monkeypatch):
    """A result's encoder spec is rebuilt by query/view; hf-hub:/local-dir: names hold a colon."""
    from pc_ovseg.encoders.clip import ClipEncoder
    seen = {}
    monkeypatch.setattr(ClipEncoder, "__init__", lambda self, m, w, **kw: seen.update(m=m, w=w))
    ClipEncoder.from_spec(rest)
    assert (seen["m"], seen["w"]) == (model, weights)


def test_run_loads_clip_once(tiny, tmp_path, monkeypatch):
    from pc_ovseg import pipeline
    from pc_ovseg.encoders import clip
    built = []
    real = clip.ClipEncoder._load
    monkeypatch.setattr(clip.ClipEncoder, "_load", lambda self, *a, **k: built.append(1) or real(self, *a, **k))
    s = pipeline.run(str(ROOT / "data" / "sample_room.ply"), tmp_path, _cfg(tiny))
    assert len(built) == 1 and set(s["timings"]) == {"views", "2d", "fusion", "labels"}
    assert (tmp_path / "summary.json").exists() and s["config"]["views"]["max_views"] == 3


def test_fuse_then_run_reuses_every_view(tiny, tmp_path):
    from pc_ovseg import pipeline
    from pc_ovseg.cli import main
    model, weights = tiny
    room = str(ROOT / "data" / "sample_room.ply")
    assert main(["fuse", room, "--out", str(tmp_path), "--max-views", "3", "--min-views", "1", "--clip-model", model,
                 "--clip-weights", weights, "--masks", "superpixels", "--device", "cpu", "--no-progress"]) == 0
    s = pipeline.run(room, tmp_path, _cfg(tiny))
    assert s["views_cached"] == s["views"] == 3 and s["views_computed"] == 0


def test_result_save_is_atomic(tmp_path, monkeypatch):
    from pc_ovseg.data import FeatureCloud, PointCloud
    n = 10
    fc = FeatureCloud(PointCloud(np.zeros((n, 3), np.float32)), np.eye(2, dtype=np.float16)[np.arange(n) % 2],
                      np.ones(n, np.float32), np.ones(n, np.uint16))
    path = tmp_path / "fused.npz"
    fc.save(path)
    before = path.read_bytes()

    def killed(f, **arrays):
        f.write(b"half a file")
        raise KeyboardInterrupt
    monkeypatch.setattr(np, "savez", killed)
    with pytest.raises(KeyboardInterrupt):
        fc.save(path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["fused.npz"]


def test_device_reaches_the_distilled_model(tiny, tmp_path, monkeypatch):
    from pc_ovseg import pipeline
    from pc_ovseg.backbone import predict as bp
    seen = {}

    class Stop(Exception):
        pass

    def fake_predict(ckpt, cloud, *, tta=1, device=None, voxel_size=None):
        seen["device"] = device
        raise Stop
    monkeypatch.setattr(bp, "load_model", lambda path, **kw: object())
    monkeypatch.setattr(bp, "predict", fake_predict)
    with pytest.raises(Stop):
        pipeline.run(str(ROOT / "data" / "sample_room.ply"), tmp_path, _cfg(tiny, distilled="student.pt"))
    assert seen["device"] == "cpu"
