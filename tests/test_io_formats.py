"""Format details on small synthetic files: PLY variants, PCD encodings, LZF, RGB-D layouts,
manifest conventions, meshes, origin handling."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from PIL import Image

import pc_ovseg.io as pio
from pc_ovseg import native
from pc_ovseg.errors import InputError

RNG = np.random.default_rng(0)


# --- PLY -----------------------------------------------------------------------------------------

def _ply(path, fmt, xyz, rgb, quality, faces):
    head = ["ply", f"format {fmt} 1.0", "comment test", f"element vertex {len(xyz)}",
            "property float x", "property float y", "property float z",
            "property uchar red", "property uchar green", "property uchar blue", "property double quality",
            f"element face {len(faces)}", "property list uchar int vertex_indices", "end_header"]
    with open(path, "wb") as f:
        f.write(("\n".join(head) + "\n").encode())
        if fmt == "ascii":
            for p, c, q in zip(xyz.tolist(), rgb.tolist(), quality.tolist()):
                f.write(f"{p[0]!r} {p[1]!r} {p[2]!r} {c[0]} {c[1]} {c[2]} {q!r}\n".encode())
            for tri in faces:
                f.write(("3 " + " ".join(map(str, tri)) + "\n").encode())
            return
        bo = "<" if fmt == "binary_little_endian" else ">"
        v = np.empty(len(xyz), [("xyz", bo + "f4", 3), ("rgb", "u1", 3), ("q", bo + "f8")])
        v["xyz"], v["rgb"], v["q"] = xyz, rgb, quality
        fa = np.empty(len(faces), [("n", "u1"), ("i", bo + "i4", 3)])
        fa["n"], fa["i"] = 3, faces
        f.write(v.tobytes() + fa.tobytes())


@pytest.mark.parametrize("fmt", ["ascii", "binary_little_endian", "binary_big_endian"])
def test_ply_formats_agree(tmp_path, fmt):
    xyz = RNG.random((50, 3)).astype(np.float32)
    rgb = RNG.integers(0, 256, (50, 3)).astype(np.uint8)
    q = RNG.random(50)
    faces = RNG.integers(0, 50, (20, 3))
    p = tmp_path / f"m_{fmt}.ply"
    _ply(p, fmt, xyz, rgb, q, faces)
    m = pio.read_mesh(p)
    assert np.array_equal(m.vertices, xyz) and np.array_equal(m.faces, faces) and np.array_equal(m.vertex_rgb, rgb)
    assert np.array_equal(m.fields["quality"], q)
    c = pio.read_cloud(p)  # a mesh read as a cloud gives its vertices with colours and fields
    assert np.array_equal(c.xyz, xyz) and np.array_equal(c.rgb, rgb) and "quality" in c.fields


def test_ply_polygons_are_triangulated(tmp_path):
    head = "ply\nformat ascii 1.0\nelement vertex 5\nproperty float x\nproperty float y\nproperty float z\n" \
           "element face 2\nproperty list uchar int vertex_indices\nend_header\n"
    verts = "0 0 0\n1 0 0\n1 1 0\n0 1 0\n2 0 0\n"
    (tmp_path / "mixed.ply").write_text(head + verts + "4 0 1 2 3\n3 1 4 2\n")
    m = pio.read_mesh(tmp_path / "mixed.ply")  # ragged lists: plyfile fallback
    assert m.faces.tolist() == [[0, 1, 2], [0, 2, 3], [1, 4, 2]]
    (tmp_path / "quads.ply").write_text(head.replace("face 2", "face 1") + verts + "4 0 1 2 3\n")
    assert pio.read_mesh(tmp_path / "quads.ply").faces.tolist() == [[0, 1, 2], [0, 2, 3]]


def test_ply_double_coordinates_get_an_origin(tmp_path):
    world = np.array([[500000.123, 4000000.456, 12.789], [500010.5, 4000020.25, 15.0]])
    head = "ply\nformat binary_little_endian 1.0\nelement vertex 2\nproperty double x\nproperty double y\n" \
           "property double z\nend_header\n"
    (tmp_path / "utm.ply").write_bytes(head.encode() + world.astype("<f8").tobytes())
    c = pio.read_cloud(tmp_path / "utm.ply")
    assert c.origin.any() and np.all(c.origin == np.round(c.origin))
    assert np.abs(c.world_xyz - world).max() < 1e-3  # millimetre precision through float32


# --- PCD and LZF -------------------------------------------------------------------------------

def test_lzf_literals_and_overlapping_back_references():
    # "abc" literal, then a back reference of 7 bytes at distance 3 (overlapping copy)
    stream = bytes([2]) + b"abc" + bytes([(5 << 5) | 0, 2])
    assert native.lzf_decompress(stream, 10).tobytes() == b"abcabcabca"
    # long back reference (len code 7 + extra byte)
    stream = bytes([0]) + b"z" + bytes([(7 << 5), 10, 0])
    assert native.lzf_decompress(stream, 1 + 7 + 10 + 2).tobytes() == b"z" * 20
    for bad, size in [(bytes([5]) + b"ab", 6), (bytes([0, 120]) + bytes([(1 << 5), 9]), 5), (bytes([0]) + b"a", 4)]:
        with pytest.raises(ValueError):
            native.lzf_decompress(bad, size)


def _lzf_literals(raw: bytes) -> bytes:
    """Valid LZF of literal runs only (what a trivial compressor emits)."""
    out = bytearray()
    for i in range(0, len(raw), 32):
        chunk = raw[i:i + 32]
        out += bytes([len(chunk) - 1]) + chunk
    return bytes(out)


def _pcd(path, kind, xyz, rgb, label, width, height):
    n = len(xyz)
    packed = (rgb[:, 0].astype(np.uint32) << 16) | (rgb[:, 1].astype(np.uint32) << 8) | rgb[:, 2]
    head = (f"VERSION 0.7\nFIELDS x y z rgb label\nSIZE 4 4 4 4 4\nTYPE F F F F U\nCOUNT 1 1 1 1 1\n"
            f"WIDTH {width}\nHEIGHT {height}\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\nDATA {kind}\n").encode()
    rgbf = packed.view(np.float32)
    if kind == "ascii":
        rows = [f"{a!r} {b!r} {c!r} {r!r} {l}" for (a, b, c), r, l in zip(xyz.tolist(), rgbf.tolist(), label)]
        body = ("\n".join(rows) + "\n").encode()
    elif kind == "binary":
        arr = np.empty(n, [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<f4"), ("label", "<u4")])
        arr["x"], arr["y"], arr["z"], arr["rgb"], arr["label"] = xyz[:, 0], xyz[:, 1], xyz[:, 2], rgbf, label
        body = arr.tobytes()
    else:
        raw = b"".join(np.ascontiguousarray(a).tobytes() for a in
                       (xyz[:, 0], xyz[:, 1], xyz[:, 2], rgbf, label.astype("<u4")))
        comp = _lzf_literals(raw)
        body = struct.pack("<II", len(comp), len(raw)) + comp
    path.write_bytes(head + body)


@pytest.mark.parametrize("kind", ["ascii", "binary", "binary_compressed"])
def test_pcd_encodings_agree_and_keep_organised_nans(tmp_path, kind):
    xyz = RNG.random((12, 3)).astype(np.float32)
    xyz[5] = np.nan
    rgb = RNG.integers(0, 256, (12, 3)).astype(np.uint8)
    label = RNG.integers(0, 40, 12).astype(np.uint32)
    p = tmp_path / f"c_{kind}.pcd"
    _pcd(p, kind, xyz, rgb, label, 4, 3)
    c = pio.read_cloud(p)
    assert c.grid_shape == (3, 4)
    assert np.array_equal(c.xyz, xyz, equal_nan=True)
    assert np.array_equal(c.rgb, rgb) and np.array_equal(c.fields["label"], label)
    d = pio.describe(p)
    assert d["organized"] == [3, 4] and d["valid_points"] == 11 and d["label_histogram"]
    # the same points unorganised: NaN is corruption, not a hole in a grid
    _pcd(p, kind, xyz, rgb, label, 12, 1)
    with pytest.raises(InputError, match="NaN/Inf"):
        pio.read_cloud(p)


# --- arrays, labels ----------------------------------------------------------------------------

def test_layouts_and_label_files(tmp_path):
    t = np.column_stack([RNG.random((7, 3)), RNG.random(7), RNG.integers(0, 5, 7)]).astype(np.float32)
    np.save(tmp_path / "a.npy", t)
    c = pio.read_cloud(tmp_path / "a.npy", layout="xyzil")
    assert np.array_equal(c.fields["intensity"], t[:, 3])
    assert np.array_equal(c.fields["label"], t[:, 4].astype(np.int64))
    c2 = pio.read_cloud(tmp_path / "a.npy", layout="x,y,z,reflectance,_")
    assert "reflectance" in c2.fields and "label" not in c2.fields
    # SemanticKITTI layout: velodyne/000000.bin (xyzi) + labels/000000.label (uint32, lower 16 bits)
    (tmp_path / "velodyne").mkdir(); (tmp_path / "labels").mkdir()
    t[:, :4].tofile(tmp_path / "velodyne" / "000000.bin")
    sem = np.arange(7, dtype=np.uint32)
    (sem | (np.uint32(3) << 16)).tofile(tmp_path / "labels" / "000000.label")
    k = pio.read_cloud(tmp_path / "velodyne" / "000000.bin", layout="xyzi")
    assert np.array_equal(k.fields["label"], sem.astype(np.int32))
    (tmp_path / "l.txt").write_text("1\n2\n3\n")
    assert pio.read_labels(tmp_path / "l.txt").tolist() == [1, 2, 3]


# --- RGB-D layouts -------------------------------------------------------------------------------

def _png16(path, arr):
    Image.fromarray(np.asarray(arr, np.uint16)).save(path)


def _rgb(path, w, h):
    Image.fromarray(RNG.integers(0, 256, (h, w, 3)).astype(np.uint8)).save(path)


def test_scannet_layout_resamples_depth_to_colour_camera(tmp_path):
    for d in ("color", "depth", "pose", "intrinsic"):
        (tmp_path / d).mkdir()
    Kc = np.array([[40.0, 0, 31.5, 0], [0, 40.0, 23.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]])  # 64x48
    Kd = np.array([[22.0, 0, 16.0, 0], [0, 22.0, 12.0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])  # 32x24, own optics
    np.savetxt(tmp_path / "intrinsic" / "intrinsic_color.txt", Kc)
    np.savetxt(tmp_path / "intrinsic" / "intrinsic_depth.txt", Kd)
    depth = np.tile(np.arange(32, dtype=np.uint16) * 100 + 500, (24, 1))  # depth grows with column
    for i in (0, 1, 2):
        _rgb(tmp_path / "color" / f"{i}.jpg", 64, 48)
        _png16(tmp_path / "depth" / f"{i}.png", depth)
        pose = np.eye(4); pose[0, 3] = i
        np.savetxt(tmp_path / "pose" / f"{i}.txt", pose if i != 1 else np.full((4, 4), -np.inf))
    with pytest.warns(UserWarning, match="skipped 1"):
        seq = pio.read_frames(tmp_path)
    assert len(seq) == 2 and seq.names == ["0", "2"]
    f = seq[1]
    assert f.color.shape == (48, 64, 3) and f.depth.shape == (24, 32)
    dc = f.depth_camera
    # a pixel of the (scaled colour) depth camera sees what the depth sensor saw along that ray
    row = 12
    for col in (4, 16, 28):
        ray_x = (col - dc.K[0, 2]) / dc.K[0, 0]
        src_col = int(np.rint(ray_x * Kd[0, 0] + Kd[0, 2]))
        if 0 <= src_col < 32:
            assert f.depth[row, col] == pytest.approx((500 + 100 * src_col) / 1000)


def test_manifest_conventions(tmp_path):
    (tmp_path / "img").mkdir()
    _rgb(tmp_path / "img" / "c0.png", 16, 12)
    raw = np.full((6, 8), 2000, np.uint16); raw[0, 0] = 0; raw[1, 1] = 9999
    _png16(tmp_path / "img" / "d0.png", raw)
    c2w_cv = np.eye(4); c2w_cv[:3, 3] = [1.0, 2.0, 3.0]
    c2w_cv[:3, :3] = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]])
    gl = c2w_cv @ np.diag([1.0, -1, -1, 1])        # the same camera in OpenGL axes
    w2c_gl = np.linalg.inv(gl)
    man = {"format": "pc_ovseg.frames/1",
           "intrinsics": {"fx": 10, "fy": 10, "cx": 7.5, "cy": 5.5, "width": 16, "height": 12},
           "pose_convention": "world_to_camera", "axes": "opengl", "depth_scale": 4000,
           "invalid_depth": [0, 9999], "origin": [1.0, 0.0, 0.0],
           "frames": [{"name": "a", "color": "img/c0.png", "depth": "img/d0.png", "pose": w2c_gl.tolist()},
                      {"name": "b", "color": "img/c0.png", "pose": "img/p1.txt"}]}
    np.savetxt(tmp_path / "img" / "p1.txt", w2c_gl)
    (tmp_path / "m.json").write_text(json.dumps(man))
    seq = pio.read_frames(tmp_path / "m.json")
    expect = c2w_cv.copy(); expect[0, 3] -= 1.0
    assert np.allclose(seq.cameras[0].cam_to_world, expect) and np.allclose(seq.cameras[1].cam_to_world, expect)
    f = seq[0]
    assert f.name == "a" and f.depth.dtype == np.float32
    assert f.depth[0, 0] == 0 and f.depth[1, 1] == 0 and f.depth[2, 2] == np.float32(0.5)
    assert f.depth_camera.width == 8 and f.depth_camera.K[0, 0] == pytest.approx(5.0)
    assert seq[1].depth is None
    d = pio.describe(tmp_path / "m.json")
    assert d["frames"] == 2 and d["intrinsics"]["fx"] == 10 and d["depth_range"] == [0.5, 0.5]


# --- meshes --------------------------------------------------------------------------------------

@pytest.mark.parametrize("ext", ["obj", "off", "glb"])
def test_trimesh_formats(tmp_path, ext):
    import trimesh
    box = trimesh.creation.box(extents=(1, 2, 3))
    p = tmp_path / f"box.{ext}"
    box.export(p)
    m = pio.read_mesh(p)
    assert len(m.faces) == 12 and m.vertices.shape[1] == 3
    assert np.allclose(np.ptp(m.vertices, 0), [1, 2, 3])
    assert len(pio.read_cloud(p)) == len(m.vertices)
    assert pio.describe(p)["faces"] == 12


def test_e57_needs_pye57_or_reads(tmp_path):
    p = tmp_path / "scan.e57"
    p.write_bytes(b"ASTM-E57" + bytes(100))
    with pytest.raises(InputError, match="E57"):
        pio.read_cloud(p)


def test_e57_reads_scans_with_colour_and_intensity(tmp_path):
    pye57 = pytest.importorskip("pye57")
    n = 200
    # pye57's writer stores single-precision coordinates: use values float32 holds exactly
    grid = RNG.integers(0, 4000, (n, 3)) / 8.0
    d = {"cartesianX": grid[:, 0] + 500000.0, "cartesianY": grid[:, 1], "cartesianZ": grid[:, 2],
         "intensity": RNG.random(n), **{f"color{c}": RNG.integers(0, 256, n).astype(np.uint8)
                                        for c in ("Red", "Green", "Blue")}}
    e = pye57.E57(str(tmp_path / "s.e57"), mode="w")
    e.write_scan_raw(d)
    e.close()
    c = pio.read_cloud(tmp_path / "s.e57")
    world = np.stack([d["cartesianX"], d["cartesianY"], d["cartesianZ"]], 1)
    assert len(c) == n and c.origin[0] > 4096 and c.origin[0] == np.round(c.origin[0])
    assert np.array_equal(c.world_xyz, world)
    assert np.array_equal(c.rgb[:, 0], d["colorRed"]) and "intensity" in c.fields
