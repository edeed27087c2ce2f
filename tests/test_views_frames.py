"""Posed RGB-D frames -> Views on real data: 7-Scenes (depth), ScanNet (colour only), mOSD."""
from __future__ import annotations

import numpy as np
import pytest

from pc_ovseg import native
from pc_ovseg.data import RGBDFrame
from pc_ovseg.io import read_cloud, read_frames
from pc_ovseg.views import (backproject, cloud_from_frames, frame_view, frame_views, make_views, organized_view,
                            select_frames)


@pytest.fixture(scope="module")
def kitchen(shared_data):
    return read_frames(shared_data / "7scenes-redkitchen")


@pytest.fixture(scope="module")
def kitchen_cloud(kitchen):
    return cloud_from_frames(kitchen, voxel_size=0.02, max_frames=12, progress=False)


def _disagreement(fi: RGBDFrame, fj: RGBDFrame) -> float:
    xyz, _ = backproject(fi, stride=2)
    _, pix, z = native.depth_test(xyz, fj.depth_camera, fj.depth, rel_tol=0.0, abs_tol=0.10, border=10)
    return float(np.median(np.abs(fj.depth[pix[:, 0], pix[:, 1]] - z)))


@pytest.mark.parametrize("i,j", [(0, 1), (10, 11), (40, 42), (70, 71)])
def test_7scenes_depth_reprojects_within_2cm(kitchen, i, j):
    """Frame i's depth projected into frame j (10-20 sensor frames apart) agrees to < 2 cm."""
    assert _disagreement(kitchen[i], kitchen[j]) < 0.02


def test_select_frames(kitchen):
    assert select_frames(kitchen, stride=10) == list(range(0, 100, 10))
    assert select_frames(kitchen, max_views=4) == [0, 33, 66, 99]
    key = select_frames(kitchen, keyframes=True, min_translation=0.3, min_rotation_deg=30)
    assert 2 < len(key) < 100 and key[0] == 0
    assert len(select_frames(kitchen, keyframes=True, max_views=3)) == 3


def test_cloud_from_frames_is_a_coloured_voxel_cloud(kitchen_cloud):
    c = kitchen_cloud
    assert 50_000 < len(c) < 2_000_000 and c.rgb is not None
    coords, _, _, counts = native.voxelize(c.xyz, 0.02)
    assert counts.max() <= 2                              # ~one point per 2 cm voxel (centroids may straddle)


def test_frame_views_depth_test(kitchen, kitchen_cloud):
    views = list(frame_views(kitchen, kitchen_cloud, max_views=3, border=10, progress=False))
    assert [v.meta["frame"] for v in views] == [0, 50, 99]
    for v in views:
        assert v.rgb.shape == (480, 640, 3) and v.depth.shape == (480, 640)
        assert len(v.point_ids) > 20000
        r, c = v.pixels[:, 0], v.pixels[:, 1]
        assert r.min() >= 10 and c.min() >= 10 and r.max() < 470 and c.max() < 630
        _, z = v.camera.project(kitchen_cloud.xyz[v.point_ids])
        d = v.depth[r, c]
        assert np.all(np.abs(d - z) <= np.maximum(0.05, 0.05 * d) + 1e-5)
        # the index map holds visible points, and a visible point is usually its own pixel's nearest
        seen = v.index[v.index >= 0]
        assert np.isin(seen, v.point_ids).all()
        assert (v.index[r, c] >= 0).mean() > 0.99
    strict = next(frame_views(kitchen, kitchen_cloud, max_views=1, abs_tol=0.005, rel_tol=0.0, progress=False))
    assert len(strict.point_ids) < len(views[0].point_ids)


def test_depth_resolution_mismatch_uses_rescaled_intrinsics(kitchen, kitchen_cloud):
    f = kitchen[30]
    half = RGBDFrame(f.camera, f.color, np.ascontiguousarray(f.depth[::2, ::2]), f.name)
    assert half.depth_camera.width == 320
    full = frame_view(f, kitchen_cloud)
    low = frame_view(half, kitchen_cloud)
    assert low.rgb.shape == full.rgb.shape and low.depth.shape == full.depth.shape
    a, b = set(full.point_ids.tolist()), set(low.point_ids.tolist())
    assert len(a & b) / len(a | b) > 0.85
    common, ia, ib = np.intersect1d(full.point_ids, low.point_ids, return_indices=True)
    np.testing.assert_array_equal(full.pixels[ia], low.pixels[ib])


def test_scannet_colour_frames_get_visibility_from_the_cloud(shared_data):
    frames = read_frames(shared_data / "scannet-scene0000" / "scene.json")
    cloud = read_cloud(shared_data / "scannet-scene0000" / "scene0000_00.bin", layout="xyzrgb")
    assert not frames.has_depth
    views = list(make_views(frames, cloud=cloud, progress=False))
    assert len(views) == 3
    for v in views:
        assert v.rgb.shape == (968, 1296, 3) and v.depth.shape == (968, 1296)
        uv, z = v.camera.project(cloud.xyz)
        in_frustum = ((z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < 1296) & (uv[:, 1] >= 0) & (uv[:, 1] < 968)).sum()
        assert len(v.point_ids) > 1000 and 0.3 < len(v.point_ids) / in_frustum < 0.95  # occlusion removes some
        # the points' own colours match the photo where they land: the poses and visibility are right
        img = v.rgb[v.pixels[:, 0], v.pixels[:, 1]].astype(float)
        pts = cloud.rgb[v.point_ids].astype(float)
        rng = np.random.default_rng(0)
        shuffled = np.abs(img - pts[rng.permutation(len(pts))]).mean()
        assert np.abs(img - pts).mean() < 0.7 * shuffled
        assert np.abs(img - pts).mean() < 45


def test_organized_view_mosd(shared_data):
    cloud = read_cloud(shared_data / "mosd" / "test2.pcd")
    v = organized_view(cloud)
    valid = np.isfinite(cloud.xyz).all(1)
    assert len(v.point_ids) == valid.sum() > 100000
    r, c = v.pixels[:, 0], v.pixels[:, 1]
    np.testing.assert_array_equal(v.index[r, c], v.point_ids)
    # the Kinect intrinsics reproject every point onto its own pixel (to within a pixel)
    uv, z = v.camera.project(cloud.xyz[v.point_ids])
    assert np.median(np.abs(uv[:, 0] - c)) < 1.0 and np.median(np.abs(uv[:, 1] - r)) < 1.0
    np.testing.assert_allclose(v.depth[r, c], z, rtol=1e-5)


def test_zoomed_crops_of_an_organised_frame(shared_data):
    from pc_ovseg.views import zoom_views, zoom_windows
    cloud = read_cloud(shared_data / "mosd" / "test2.pcd")
    v = organized_view(cloud)
    wins = zoom_windows(480, 640, 2)
    assert len(wins) == 9 and wins[0] == (0, 0, 240, 320) and wins[-1] == (240, 320, 240, 320)
    crops = zoom_views(v, 2)
    inside = np.zeros(len(cloud), np.int32)
    for (t, l, h, w), c in zip(wins, crops):
        assert c.hw == (480, 640) and c.granularity == "close"
        r, col = c.pixels[:, 0], c.pixels[:, 1]
        np.testing.assert_array_equal(c.index[r, col], c.point_ids)  # each point owns its 2x2 block
        np.testing.assert_array_equal(c.index[::2, ::2], v.index[t:t + h, l:l + w])
        # the crop's camera projects every point onto its enlarged pixel
        uv, _ = c.camera.project(cloud.xyz[c.point_ids])
        assert np.median(np.abs(uv[:, 0] - col)) < 1.0 and np.median(np.abs(uv[:, 1] - r)) < 1.0
        inside[c.point_ids] += 1
    # every point is in a crop; away from the border in four of them (half-window strides)
    assert (inside[v.point_ids] >= 1).all()
    interior = v.index[120:360, 160:480]
    assert (inside[interior[interior >= 0]] == 4).all()


def test_inputs_that_cannot_make_views(shared_data):
    from pc_ovseg.errors import InputError
    frames = read_frames(shared_data / "scannet-scene0000" / "scene.json")
    with pytest.raises(InputError, match="no depth"):
        cloud_from_frames(frames)
    cloud = read_cloud(shared_data / "scannet-scene0000" / "scene0000_00.bin", layout="xyzrgb")
    with pytest.raises(InputError, match="organised"):
        organized_view(cloud)
