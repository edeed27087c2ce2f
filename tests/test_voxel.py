"""The native voxeliser against a NumPy reference: identical voxels, order and maps."""
from __future__ import annotations

import numpy as np
import pytest

from pc_ovseg import native


def voxelize_reference(xyz: np.ndarray, voxel_size: float):
    """np.unique on floor(xyz / voxel_size) (float64), re-ordered by first appearance."""
    coords = np.floor(np.asarray(xyz, np.float64) / voxel_size).astype(np.int64)
    uniq, first, inverse, counts = np.unique(coords, axis=0, return_index=True, return_inverse=True,
                                             return_counts=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return uniq[order].astype(np.int32), rank[inverse.reshape(-1)], first[order], counts[order]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("voxel", [0.05, 0.3, 1.0])
def test_matches_numpy_reference(dtype, voxel):
    rng = np.random.default_rng(7)
    xyz = np.concatenate([rng.normal(0, 3, (20000, 3)),                 # negative coords: floor, not trunc
                          np.repeat(rng.normal(0, 3, (50, 3)), 20, 0),   # many duplicates
                          np.array([[0.0, -0.0, voxel], [-voxel, voxel * 2, -1e-9]])])  # exact boundaries
    xyz = xyz.astype(dtype)
    got = native.voxelize(xyz, voxel)
    ref = voxelize_reference(xyz, voxel)
    for g, r, name in zip(got, ref, ("coords", "inverse", "first", "counts")):
        assert np.array_equal(g, r), name
    coords, inverse, first, counts = got
    assert coords.dtype == np.int32 and inverse.dtype == np.int64
    assert np.all(np.diff(first) > 0)                                    # order of first appearance
    assert np.array_equal(coords[inverse], np.floor(xyz.astype(np.float64) / voxel).astype(np.int32))


def test_real_cloud(shared_data):
    import pc_ovseg.io as pio
    c = pio.read_cloud(shared_data / "semantickitti" / "points_000000.npy")
    for g, r in zip(native.voxelize(c.xyz, 0.2), voxelize_reference(c.xyz, 0.2)):
        assert np.array_equal(g, r)
    pts, inv = native.voxel_downsample(c.xyz, 0.2)
    assert len(pts) == inv.max() + 1 < len(c)
    # each kept point is the centroid of its voxel's points
    k = 5
    assert np.allclose(pts[k], c.xyz[inv == k].mean(0), atol=1e-5)


def test_errors():
    with pytest.raises(ValueError, match="finite"):
        native.voxelize(np.array([[0, 0, 0], [np.nan, 0, 0]], np.float32), 0.1)
    with pytest.raises(ValueError, match="finite"):
        native.voxelize(np.array([[np.inf, 0, 0]]), 0.1)
    with pytest.raises(ValueError, match="voxel_size"):
        native.voxelize(np.zeros((3, 3), np.float32), 0.0)
    with pytest.raises(ValueError, match="2\\^21"):
        native.voxelize(np.array([[0, 0, 0], [1e6, 0, 0]], np.float32), 0.1)
    coords, inverse, first, counts = native.voxelize(np.zeros((0, 3), np.float32), 0.1)
    assert coords.shape == (0, 3) and inverse.shape == (0,)
