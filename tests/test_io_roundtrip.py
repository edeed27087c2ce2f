"""write -> read keeps every field bit-exact (PLY, NPZ; LAS within the quantisation chosen)."""
from __future__ import annotations

import numpy as np
import pytest

import pc_ovseg.io as pio
from pc_ovseg.data import Mesh, PointCloud

RNG = np.random.default_rng(1)


def _rich_cloud(n=500, origin=(652000.0, 5400000.0, 300.0)) -> PointCloud:
    return PointCloud(
        xyz=(RNG.random((n, 3)) * 100).astype(np.float32),
        rgb=RNG.integers(0, 256, (n, 3)).astype(np.uint8),
        normals=RNG.normal(size=(n, 3)).astype(np.float32),
        fields={"intensity": RNG.integers(0, 65535, n).astype(np.uint16),
                "ring": RNG.integers(-100, 100, n).astype(np.int8),
                "instance": RNG.integers(0, 2**31 - 1, n).astype(np.int64),
                "gps_time": RNG.random(n) * 1e5,
                "mask": RNG.random(n) > 0.5,
                "feat": RNG.random((n, 4)).astype(np.float16),
                "uid": RNG.integers(0, 2**32 - 1, n).astype(np.uint32)},
        origin=np.array(origin))


def _assert_same(a: PointCloud, b: PointCloud, fields=None):
    assert np.array_equal(a.origin, b.origin)
    assert np.array_equal(a.xyz, b.xyz, equal_nan=True)
    for attr in ("rgb", "normals"):
        x, y = getattr(a, attr), getattr(b, attr)
        assert (x is None) == (y is None) and (x is None or np.array_equal(x, y)), attr
    for k in fields or a.fields:
        assert k in b.fields, k
        assert b.fields[k].dtype == a.fields[k].dtype and b.fields[k].shape == a.fields[k].shape, k
        assert np.array_equal(a.fields[k], b.fields[k]), k


@pytest.mark.parametrize("ext", ["ply", "npz"])
def test_every_field_roundtrips(tmp_path, ext):
    c = _rich_cloud()
    labels = RNG.integers(0, 20, len(c)).astype(np.int32)
    scores = RNG.random(len(c)).astype(np.float32)
    colors = RNG.integers(0, 256, (len(c), 3)).astype(np.uint8)
    pio.write(tmp_path / f"c.{ext}", c, labels=labels, scores=scores, colors=colors,
              extra={"conf": scores.astype(np.float64)})
    r = pio.read_cloud(tmp_path / f"c.{ext}")
    expect = PointCloud(c.xyz, colors, c.normals, {**c.fields, "label": labels, "score": scores,
                                                   "conf": scores.astype(np.float64)}, c.origin)
    _assert_same(expect, r)
    assert np.abs(r.world_xyz - c.world_xyz).max() == 0


def test_ply_is_plain_ply_for_other_tools(tmp_path):
    import plyfile
    c = _rich_cloud(50)
    pio.write_ply(tmp_path / "c.ply", c, labels=np.arange(50))
    ply = plyfile.PlyData.read(str(tmp_path / "c.ply"))
    v = ply["vertex"].data
    assert ply.text is False and ply.byte_order == "<"
    assert np.allclose(v["x"], c.world_xyz[:, 0])  # absolute coordinates for other tools
    assert list(v["label"]) == list(range(50)) and {"red", "nx", "feat_3", "score"} - {"score"} <= set(v.dtype.names)


def test_real_clouds_roundtrip(shared_data, tmp_path):
    mosd = pio.read_cloud(shared_data / "mosd" / "learn18.pcd")
    pio.write(tmp_path / "m.ply", mosd)
    r = pio.read_cloud(tmp_path / "m.ply")
    assert r.grid_shape == (480, 640)  # organised grid and its NaN points survive
    _assert_same(mosd, r)
    kitti = pio.read_cloud(shared_data / "semantickitti" / "points_000000.npy")
    for ext in ("ply", "npz"):
        pio.write(tmp_path / f"k.{ext}", kitti)
        _assert_same(kitti, pio.read_cloud(tmp_path / f"k.{ext}"))


def test_las_roundtrip_keeps_source_quantisation(shared_data, tmp_path):
    import laspy
    src = shared_data / "las" / "sample_c.las"
    hdr = laspy.read(src).header
    c = pio.read_cloud(src)
    pio.write_las(tmp_path / "s.las", c, scale=hdr.scales, offset=hdr.offsets)
    r = pio.read_cloud(tmp_path / "s.las")
    _assert_same(c, r, fields=["classification", "intensity", "return_number", "number_of_returns",
                               "gps_time", "point_source_id", "user_data"])


@pytest.mark.parametrize("ext", ["las", "laz"])
def test_las_default_mm_quantisation_and_labels(tmp_path, ext):
    n = 400
    mm = RNG.integers(-2_000_000, 2_000_000, (n, 3))           # millimetre grid, +-2 km
    c = PointCloud((mm / 1000).astype(np.float32), RNG.integers(0, 256, (n, 3)).astype(np.uint8),
                   fields={"intensity": RNG.integers(0, 65535, n).astype(np.uint16)},
                   origin=np.array([431000.0, 4580000.0, 120.0]))
    assert np.array_equal(np.round(c.xyz.astype(np.float64) * 1000), mm)  # float32 holds the mm values
    labels = RNG.integers(0, 256, n)
    scores = RNG.random(n).astype(np.float32)
    pio.write(tmp_path / f"c.{ext}", c, labels=labels, scores=scores)
    r = pio.read_cloud(tmp_path / f"c.{ext}")
    assert np.array_equal(r.origin, c.origin)
    assert np.array_equal(r.xyz, c.xyz)
    assert np.array_equal(r.rgb, c.rgb)
    assert np.array_equal(r.fields["classification"], labels.astype(np.uint8))
    assert np.array_equal(r.fields["intensity"], c.fields["intensity"])
    assert np.array_equal(r.fields["score"], scores)  # extra bytes dimension
    with pytest.raises(ValueError, match="0..255"):
        pio.write(tmp_path / f"bad.{ext}", c, labels=labels + 300)


def test_mesh_ply_roundtrip(tmp_path):
    import trimesh
    box = trimesh.creation.icosphere(subdivisions=2)
    m = Mesh(box.vertices, box.faces, RNG.integers(0, 256, (len(box.vertices), 3)).astype(np.uint8),
             fields={"label": RNG.integers(0, 5, len(box.vertices))})
    pio.write(tmp_path / "m.ply", m)
    r = pio.read_mesh(tmp_path / "m.ply")
    assert np.array_equal(r.vertices, m.vertices) and np.array_equal(r.faces, m.faces)
    assert np.array_equal(r.vertex_rgb, m.vertex_rgb)
    assert r.fields["label"].dtype == m.fields["label"].dtype and np.array_equal(r.fields["label"], m.fields["label"])


def test_write_rejects_unknown_extension_and_bad_lengths(tmp_path):
    c = _rich_cloud(10)
    with pytest.raises(ValueError, match="cannot write"):
        pio.write(tmp_path / "c.xyz", c)
    with pytest.raises(ValueError, match="labels"):
        pio.write(tmp_path / "c.ply", c, labels=np.zeros(3))
