"""Readers on the real sample data (../shared/data)."""
from __future__ import annotations

import numpy as np
import pytest

import pc_ovseg.io as pio
from pc_ovseg.data import FrameSequence, PointCloud
from pc_ovseg.errors import InputError

LAS_COUNTS = {"sample_c.las": 14408, "warsaw_small.las": 3000, "mvk-thin.las": 6280, "autzen_trim.las": 110000}


@pytest.mark.parametrize("name", sorted(LAS_COUNTS))
def test_las_counts_classes_and_precision(shared_data, name):
    import laspy
    path = shared_data / "las" / name
    c = pio.read_cloud(path)
    ref = laspy.read(path)
    assert len(c) == LAS_COUNTS[name] == len(ref.points)
    assert np.array_equal(c.fields["classification"], np.asarray(ref.classification))
    assert np.array_equal(c.fields["intensity"], np.asarray(ref.intensity))
    assert {"return_number", "number_of_returns"} <= set(c.fields)
    # UTM-scale coordinates: float32 local + float64 origin keeps the file's precision (< 1 mm)
    world = np.stack([np.asarray(ref.x), np.asarray(ref.y), np.asarray(ref.z)], 1)
    assert np.abs(world).max() > 4096 and c.origin.any()
    assert np.abs(c.world_xyz - world).max() < 1e-3
    has_rgb = "red" in ref.point_format.dimension_names
    assert (c.rgb is not None) == has_rgb
    if has_rgb:
        raw = np.asarray(ref.red)
        expect = (raw >> 8) if raw.max() > 255 else raw
        assert np.array_equal(c.rgb[:, 0], expect.astype(np.uint8))


def test_sample_c_histogram(shared_data):
    d = pio.describe(shared_data / "las" / "sample_c.las")
    assert d["points"] == 14408
    hist = d["label_histogram"]
    assert d["label_field"] == "classification"
    assert sum(hist.values()) == 14408
    assert hist["2"] == 1368 and hist["6"] == 12525  # ground, building
    assert {"2", "3", "4", "5", "6", "14"} <= set(hist)  # ground, vegetation, building, wire


def test_mosd_organised_with_labels(shared_data):
    c = pio.read_cloud(shared_data / "mosd" / "learn0.pcd")
    assert c.grid_shape == (480, 640) and len(c) == 307200
    assert c.rgb is not None and c.rgb.dtype == np.uint8
    lab = c.fields["label"]
    valid = np.isfinite(c.xyz).all(1)
    assert 0 < valid.sum() < len(c)                     # NaN points kept for the grid
    assert np.all(lab[~valid] == 0)                     # label 0 = no depth
    assert set(np.unique(lab[valid])) >= {1}            # table
    assert (lab >= 20).any()                            # objects
    # organised: row-major grid, camera at origin looking down +z
    grid = c.xyz.reshape(480, 640, 3)
    assert np.nanmin(grid[..., 2]) > 0.3
    left, right = np.nanmean(grid[:, :100, 0]), np.nanmean(grid[:, -100:, 0])
    assert left < right


@pytest.mark.parametrize("name", ["learn5.pcd", "test25.pcd", "test40.pcd"])
def test_every_mosd_frame_decodes(shared_data, name):
    c = pio.read_cloud(shared_data / "mosd" / name)
    assert c.grid_shape == (480, 640)
    assert np.isfinite(c.xyz).all(1).sum() > 100000


def test_semantickitti_npy_with_sibling_labels(shared_data):
    d = shared_data / "semantickitti"
    c = pio.read_cloud(d / "points_000000.npy")
    lab = pio.read_labels(d / "labels_000000.npy")
    assert len(c) == len(lab) == 90404
    assert np.array_equal(c.fields["label"], lab)
    assert lab.min() >= 0 and lab.max() <= 19


def test_scannet_bin_layout(shared_data):
    p = shared_data / "scannet-scene0000" / "scene0000_00.bin"
    c = pio.read_cloud(p, layout="xyzrgb")
    raw = np.fromfile(p, np.float32).reshape(-1, 6)
    assert len(c) == 40684
    assert np.array_equal(c.xyz, raw[:, :3])
    assert np.array_equal(c.rgb, raw[:, 3:].astype(np.uint8))
    with pytest.raises(InputError, match="layout"):
        pio.read_cloud(p)
    with pytest.raises(InputError, match="unknown column letter"):
        pio.read_cloud(p, layout="xyzrgq")
    with pytest.raises(InputError, match="whole number"):
        pio.read_cloud(p, layout="xyzrgbi_l__")

def test_7scenes_frames(shared_data):
    seq = pio.read_frames(shared_data / "7scenes-redkitchen")
    assert isinstance(seq, FrameSequence) and len(seq) == 100
    cam = seq.cameras[0]
    assert cam.K[0, 0] == 585 and cam.K[1, 1] == 585 and cam.K[0, 2] == 320 and cam.K[1, 2] == 240
    assert (cam.width, cam.height) == (640, 480)
    pose = np.loadtxt(shared_data / "7scenes-redkitchen" / "frame-000000.pose.txt")
    assert np.allclose(cam.cam_to_world, pose)
    f = seq[3]
    assert f.name == "frame-000030"
    assert f.color.shape == (480, 640, 3) and f.color.dtype == np.uint8
    assert f.depth.shape == (480, 640) and f.depth.dtype == np.float32
    from PIL import Image
    raw = np.asarray(Image.open(shared_data / "7scenes-redkitchen" / "frame-000030.depth.png"))
    ok = (raw > 0) & (raw < 65535)
    assert np.array_equal(f.depth[ok], (raw[ok] / np.float32(1000)).astype(np.float32))
    assert np.all(f.depth[~ok] == 0)
    assert 0.3 < np.median(f.depth[ok]) < 5


def test_scene_json_posed_colour_without_depth(shared_data):
    import json
    p = shared_data / "scannet-scene0000" / "scene.json"
    meta = json.loads(p.read_text())
    seq = pio.read_frames(p)
    assert len(seq) == 3 and not seq.has_depth and seq.has_color
    cam = seq.cameras[1]
    assert (cam.width, cam.height) == (1296, 968)
    assert np.allclose(cam.K, np.asarray(meta["intrinsics_4x4"])[:3, :3])
    assert np.allclose(cam.cam_to_world, meta["images"][1]["camera_to_world"])
    f = seq[1]
    assert f.depth is None and f.color.shape == (968, 1296, 3)
    # the cameras look at the cloud: most points project in front of at least one camera
    cloud = pio.read_cloud(p.parent / "scene0000_00.bin", layout="xyzrgb")
    uv, z = cam.project(cloud.xyz)
    inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < 1296) & (uv[:, 1] >= 0) & (uv[:, 1] < 968)
    assert inside.mean() > 0.05


def test_read_dispatch_types(shared_data):
    assert isinstance(pio.read(shared_data / "mosd" / "test2.pcd"), PointCloud)
    assert isinstance(pio.read(shared_data / "7scenes-redkitchen"), FrameSequence)
    with pytest.raises(InputError, match="not a point cloud"):
        pio.read_cloud(shared_data / "7scenes-redkitchen")
    with pytest.raises(InputError, match="not a mesh"):
        pio.read_mesh(shared_data / "las" / "warsaw_small.las")


def test_read_cloud_voxel_downsampling(shared_data):
    from pc_ovseg import native
    full = pio.read_cloud(shared_data / "mosd" / "test33.pcd")
    thin = pio.read_cloud(shared_data / "mosd" / "test33.pcd", voxel_size=0.02)
    valid = full.select(np.flatnonzero(np.isfinite(full.xyz).all(1)))
    coords, _, first, _ = native.voxelize(valid.xyz, 0.02)
    assert len(thin) == len(coords) < len(valid) and thin.grid_shape is None
    assert np.array_equal(thin.xyz, valid.xyz[first])
    assert np.array_equal(thin.fields["label"], valid.fields["label"][first])
    assert np.array_equal(thin.rgb, valid.rgb[first])
