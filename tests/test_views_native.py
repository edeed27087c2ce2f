"""The native views kernels against the torch reference, and the hole filler's behaviour."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pc_ovseg import native
from pc_ovseg.data import Camera
from pc_ovseg.io import read_cloud, read_frames
from pc_ovseg.views import reference
from pc_ovseg.views.cameras import make_camera


@pytest.fixture(scope="module")
def scannet(shared_data):
    return read_cloud(shared_data / "scannet-scene0000" / "scene0000_00.bin", layout="xyzrgb")


def test_splat_matches_torch_reference(scannet):
    cam = make_camera([1.0, 1.0, 2.2], [5.0, 6.0, 0.5])
    depth, index = native.splat(scannet.xyz, cam, fill_iters=0)
    d_ref, i_ref = reference.splat_points(torch.from_numpy(scannet.xyz), cam)
    assert (index >= 0).sum() > 10000
    np.testing.assert_array_equal(index, i_ref.numpy())
    np.testing.assert_array_equal(depth, d_ref.numpy())


def test_depth_test_matches_torch_reference(shared_data, scannet):
    frames = read_frames(shared_data / "7scenes-redkitchen")
    f = frames[0]
    xyz = np.random.default_rng(0).normal(size=(200000, 3)).astype(np.float32) + f.camera.center.astype(np.float32)
    from pc_ovseg.views import backproject
    pts, _ = backproject(frames[1])
    xyz = np.concatenate([xyz, pts])
    for rel, abs_, border in ((0.05, 0.05, 10), (0.25, 0.0, 0), (0.0, 0.2, 3)):
        ids, pix, z = native.depth_test(xyz, f.depth_camera, f.depth, rel_tol=rel, abs_tol=abs_, border=border)
        r_ids, r_pix = reference.depth_test(torch.from_numpy(xyz), f.depth_camera, torch.from_numpy(f.depth),
                                            rel_tol=rel, abs_tol=abs_, border=border)
        assert len(ids) > 50000
        np.testing.assert_array_equal(ids, r_ids.numpy())
        np.testing.assert_array_equal(pix, r_pix.numpy())
        assert pix[:, 0].min() >= border and pix[:, 1].max() < 640 - border


def _plane(n: int, z: float, spacing: float) -> np.ndarray:
    g = (np.arange(n) - n / 2) * spacing
    x, y = np.meshgrid(g, g)
    return np.stack([x.ravel(), y.ravel(), np.full(x.size, z)], 1).astype(np.float32)


def test_splat_discs_and_hole_filling_make_solid_surfaces():
    cam = Camera(np.array([[300.0, 0, 99.5], [0, 300, 99.5], [0, 0, 1]]), np.eye(4), 200, 200)
    front = _plane(60, 2.0, 0.01)                  # 0.6 m square, 1.5 px spacing: 1-px splats leave gaps
    back = _plane(200, 4.0, 0.01)                  # a wall behind it that must not show through
    xyz = np.concatenate([front, back])
    d0, i0 = native.splat(xyz, cam, fill_iters=0)
    inner = (slice(60, 140), slice(60, 140))        # inside the front square's image (90 px wide)
    assert (d0[inner] > 3.0).mean() > 0.3           # 1-pixel points: the far wall shows through
    radius = np.full(len(xyz), 0.0075, np.float32)
    d1, i1 = native.splat(xyz, cam, radius=radius, fill_iters=2)
    assert (d1[inner] < 3.0).all() and (i1[inner] < len(front)).all()
    d2, _ = native.splat(xyz, cam, fill_iters=2, fill_reach=4)
    assert (d2[inner] < 3.0).mean() > 0.99          # filling alone closes the gaps
    # the front square does not grow: pixels just outside it still see the wall
    col = 99.5 + 300 * (front[:, 0].max() / 2.0)
    assert (d1[100, int(col) + 3:int(col) + 10] > 3.0).all()


def test_fill_keeps_silhouettes_of_lone_objects():
    cam = Camera(np.array([[300.0, 0, 99.5], [0, 300, 99.5], [0, 0, 1]]), np.eye(4), 200, 200)
    obj = _plane(30, 2.0, 0.005)
    d0, _ = native.splat(obj, cam, fill_iters=0)
    d1, _ = native.splat(obj, cam, fill_iters=3)
    assert (d1 > 0).sum() <= (d0 > 0).sum() * 1.15
    df, _ = native.fill_holes(d0, np.where(d0 > 0, 0, -1), iters=3)
    np.testing.assert_array_equal(df > 0, d1 > 0)
