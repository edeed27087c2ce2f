"""From an input to its scene: the cloud RGB-D frames build (selected frames, cached with the run),
which plan a bare cloud gets (detect_kind on the shared data) and that commands report it."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pc_ovseg import io
from pc_ovseg.cli import main
from pc_ovseg.config import ViewsConfig
from pc_ovseg.data import PointCloud
from pc_ovseg.errors import InputError
from pc_ovseg.pipeline import load_scene
from pc_ovseg.views import cloud_from_frames, detect_kind

LAS = ["sample_c.las", "warsaw_small.las", "mvk-thin.las", "autzen_trim.las"]
KITTI = ["points_000000.npy", "points_000001.npy", "points_000002.npy", "points_seq00_000000.npy"]


# -- the cloud of an RGB-D folder ---------------------------------------------------------------
def _coverage(scene) -> float:
    seen = np.zeros(len(scene.cloud), bool)
    for job in scene.jobs:
        seen[job.make().point_ids] = True
    return float(seen.mean())


def test_default_cloud_comes_from_the_selected_frames_and_is_cached(shared_data, tmp_path, monkeypatch):
    from pc_ovseg.views import make
    kitchen = str(shared_data / "7scenes-redkitchen")
    cfg = ViewsConfig(max_views=4)
    scene = load_scene(kitchen, cfg, plan_cache=tmp_path, progress=False)
    assert len(scene.jobs) == 4 and scene.kind == "frames"
    assert _coverage(scene) >= 0.99   # 0.9976: only voxels averaged across a depth edge fail the depth test
    cached = list(tmp_path.glob("cloud_*.npz"))
    assert len(cached) == 1

    def no_build(*a, **k):
        raise AssertionError("built the cloud again")
    monkeypatch.setattr(make, "cloud_from_frames", no_build)
    again = load_scene(kitchen, cfg, plan_cache=tmp_path, progress=False)
    assert np.array_equal(again.cloud.xyz, scene.cloud.xyz) and np.array_equal(again.cloud.rgb, scene.cloud.rgb)
    assert again.digest == scene.digest
    monkeypatch.undo()

    cached[0].write_bytes(b"PK\x03\x04 torn")       # a damaged cache entry is built again
    rebuilt = load_scene(kitchen, cfg, plan_cache=tmp_path, progress=False)
    assert np.array_equal(rebuilt.cloud.xyz, scene.cloud.xyz)
    assert len(np.load(cached[0])["xyz"]) == len(scene.cloud)

    other = load_scene(kitchen, ViewsConfig(max_views=4, voxel_size=0.05), plan_cache=tmp_path, progress=False)
    assert len(list(tmp_path.glob("cloud_*.npz"))) == 2 and len(other.cloud) < len(scene.cloud)


def test_cloud_frames_all_and_n_keep_the_old_clouds(shared_data, tmp_path):
    kitchen = str(shared_data / "7scenes-redkitchen")
    frames = io.read_frames(kitchen)
    every = load_scene(kitchen, ViewsConfig(max_views=4, voxel_size=0.05, cloud_frames="all"), progress=False)
    old = cloud_from_frames(frames, voxel_size=0.05, progress=False)
    assert np.array_equal(every.cloud.xyz, old.xyz) and np.array_equal(every.cloud.rgb, old.rgb)
    assert _coverage(every) < 0.5             # 0.38: most of the kitchen is in no selected frame
    eight = load_scene(kitchen, ViewsConfig(max_views=4, voxel_size=0.05, cloud_frames=8), progress=False)
    assert np.array_equal(eight.cloud.xyz, cloud_from_frames(frames, voxel_size=0.05, max_frames=8,
                                                             progress=False).xyz)


@pytest.mark.parametrize("value", [0, -2, "some", 2.5, None, True])
def test_bad_cloud_frames_fail_in_one_line_naming_the_option(value):
    with pytest.raises(InputError) as exc:
        ViewsConfig(cloud_frames=value)
    assert "--cloud-frames" in str(exc.value) and "\n" not in str(exc.value)


def test_cloud_frames_flag_is_checked_at_parse_time(shared_data, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["render", str(shared_data / "7scenes-redkitchen"), "--out", str(tmp_path), "--cloud-frames", "most"])
    assert exc.value.code == 2
    assert "argument --cloud-frames: expected selected, all or an integer >= 1" in capsys.readouterr().err


# -- which plan a bare cloud gets ----------------------------------------------------------------
def _crop(cloud: PointCloud, center, half: float = 7.5) -> PointCloud:
    m = np.all(np.abs(cloud.xyz[:, :2] - np.asarray(center)) < half, axis=1)
    return PointCloud(cloud.xyz[m], cloud.rgb[m], origin=cloud.origin)


@pytest.mark.parametrize("path,kind", [(f"las/{n}", "aerial") for n in LAS]
                         + [(f"semantickitti/{n}", "street") for n in KITTI]
                         + [("scannet-scene0000/scene0000_00.bin", "indoor"),
                            ("scannet-scene0000-labelled/scene0000_00_vert.npy", "indoor")]
                         + [(f"mosd/{n}.pcd", "object") for n in ("learn0", "learn26", "test40")])
def test_detect_kind_on_the_shared_data(shared_data, path, kind):
    layout = "xyzrgb" if "scannet" in path else None
    assert detect_kind(io.read_cloud(shared_data / path, layout=layout)) == kind


@pytest.mark.parametrize("center", [(40, 35), (15, 50)])  # a flat roof; ground, trees and a roof edge
def test_a_15m_urban_crop_is_aerial_also_as_ply(shared_data, tmp_path, center):
    crop = _crop(io.read_cloud(shared_data / "las" / "sample_c.las"), center)
    assert len(crop) > 500 and np.ptp(crop.xyz[:, :2], axis=0).max() < 15.01
    assert detect_kind(crop) == "aerial"
    io.write(tmp_path / "crop.ply", crop)
    ply = io.read_cloud(tmp_path / "crop.ply")
    assert "number_of_returns" not in ply.fields   # geometry alone decides
    assert detect_kind(ply) == "aerial"


def test_a_part_of_a_room_stays_indoor(shared_data):
    room = io.read_cloud(shared_data / "scannet-scene0000-labelled" / "scene0000_00_vert.npy", layout="xyzrgb")
    mid = np.median(room.xyz[:, :2], axis=0)
    quarter = room.xyz[np.all(room.xyz[:, :2] < mid, axis=1)]
    assert detect_kind(PointCloud(quarter, origin=room.origin)) == "indoor"


# -- commands say which plan they used ----------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from pc_ovseg.encoders import make_tiny_clip_checkpoint
    path = tmp_path_factory.mktemp("weights") / "tiny_clip.pt"
    return make_tiny_clip_checkpoint(path).split(":")[1], str(path)


def test_render_run_and_fuse_report_the_plan(shared_data, tiny_clip, tmp_path, capsys):
    las = str(shared_data / "las" / "warsaw_small.las")
    small = ["--max-views", "2", "--width", "96", "--height", "64", "--no-progress"]
    assert main(["render", las, "--out", str(tmp_path / "r"), *small]) == 0
    assert capsys.readouterr().out.startswith("plan: aerial (detected)\n")
    assert main(["render", las, "--out", str(tmp_path / "r"), *small, "--kind", "street", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "street"

    model, weights = tiny_clip
    enc = ["--clip-model", model, "--clip-weights", weights, "--device", "cpu"]
    assert main(["run", las, "--out", str(tmp_path / "run"), "--labels", "ground,tree", *small, *enc, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "aerial"
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["kind"] == "aerial"
    assert main(["fuse", las, "--out", str(tmp_path / "fuse"), *small, *enc]) == 0
    assert capsys.readouterr().out.startswith("plan: aerial (detected)\nwrote ")
