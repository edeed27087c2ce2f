"""Regenerate the bad-input corpus (tiny broken or hostile files) and expected.json.

Run from anywhere: ``python tests/bad_inputs/make_corpus.py``. Each entry of expected.json maps
a path (relative to this folder) to the reader to call and a fragment the one-line
InputError message must contain.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import struct
import sys

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
EXPECTED: dict[str, dict] = {}


def case(name: str, expect: str, *, reader: str = "read", layout: str | None = None):
    EXPECTED[name] = {"reader": reader, "expect": expect, **({"layout": layout} if layout else {})}
    return os.path.join(HERE, name)


def put(name: str, data: bytes | str, expect: str, **kw):
    p = case(name, expect, **kw)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def ply_head(n, fmt="ascii", props="property float x\nproperty float y\nproperty float z\n", extra=""):
    return f"ply\nformat {fmt} 1.0\nelement vertex {n}\n{props}{extra}end_header\n"


def pcd_head(n, data="ascii", fields="x y z", size="4 4 4", type_="F F F", count="1 1 1",
             width=None, height=1):
    width = n if width is None else width
    return (f"# .PCD v0.7\nVERSION 0.7\nFIELDS {fields}\nSIZE {size}\nTYPE {type_}\nCOUNT {count}\n"
            f"WIDTH {width}\nHEIGHT {height}\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\nDATA {data}\n")


def png16(arr) -> bytes:
    b = io.BytesIO()
    Image.fromarray(np.asarray(arr, np.uint16)).save(b, "PNG")
    return b.getvalue()


def png1(shape=(6, 8)) -> bytes:
    b = io.BytesIO()
    Image.fromarray(np.ones(shape, bool)).save(b, "PNG")  # PIL mode '1'
    return b.getvalue()


def npy_bytes(arr) -> bytes:
    b = io.BytesIO()
    np.save(b, arr)
    return b.getvalue()


def png8(shape=(6, 8, 3)) -> bytes:
    b = io.BytesIO()
    Image.fromarray(np.full(shape, 128, np.uint8)).save(b, "PNG")
    return b.getvalue()


POSE = "1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n"
K7 = "8 0 4\n0 8 3\n0 0 1\n"


def seven(folder, expect, *, color=True, depth=True, pose=POSE, depth_img=None, color_img=None):
    base = f"{folder}/frame-000000"
    first = f"{base}.color.png" if color else f"{base}.depth.png"
    case(folder, expect, reader="read_frames")
    put(f"{folder}/camera-intrinsics.txt", K7, "")
    if color:
        put(f"{base}.color.png", color_img or png8(), "")
    if depth:
        put(f"{base}.depth.png", depth_img or png16(np.full((6, 8), 1500)), "")
    if pose is not None:
        put(f"{base}.pose.txt", pose, "")
    for k in list(EXPECTED):
        if k.startswith(folder + "/"):
            del EXPECTED[k]
    return first


def manifest(name, expect, body: dict, files: dict | None = None):
    for fn, data in (files or {}).items():
        put(fn, data, "")
        del EXPECTED[fn]
    put(name, json.dumps(body), expect, reader="read_frames")


GOOD_FRAME = {"color": "m_img/c.png", "depth": "m_img/d.png", "pose": np.eye(4).tolist()}
INTR = {"fx": 8, "fy": 8, "cx": 4, "cy": 3, "width": 8, "height": 6}


def main():
    if any(os.scandir(HERE)):
        for e in os.scandir(HERE):
            if e.name not in ("make_corpus.py", "__pycache__"):
                shutil.rmtree(e.path) if e.is_dir() else os.remove(e.path)
    xyz = "0 0 0\n1 0 0\n0 1 0\n"
    # --- PLY ------------------------------------------------------------------------------------
    put("ply_truncated_binary.ply", ply_head(100, "binary_little_endian").encode() + np.zeros(30, "<f4").tobytes(), "truncated")
    put("ply_no_magic.ply", "plx\n" + ply_head(3)[4:] + xyz, "not a PLY")
    put("ply_no_end_header.ply", ply_head(3).replace("end_header\n", "") + xyz, "end_header")
    put("ply_bad_format.ply", ply_head(3, "binary_middle_endian") + xyz, "format")
    put("ply_bad_type.ply", ply_head(3, props="property float128 x\nproperty float y\nproperty float z\n") + xyz, "type")
    put("ply_no_xyz.ply", ply_head(3, props="property float u\nproperty float v\nproperty float w\n") + xyz, "x, y, z")
    put("ply_ascii_short.ply", ply_head(5) + xyz, "truncated")
    put("ply_ascii_nonnumeric.ply", ply_head(3) + "0 0 0\n1 abc 0\n0 1 0\n", "non-numeric")
    put("ply_ascii_wrong_width.ply", ply_head(3) + "0 0 0 1\n1 0 0 1\n0 1 0 1\n", "values per row differ")
    put("ply_nan.ply", ply_head(3) + "0 0 0\nnan 0 0\n0 1 0\n", "NaN/Inf")
    put("ply_inf.ply", ply_head(3) + "0 0 0\n1 inf 0\n0 1 -inf\n", "NaN/Inf")
    put("ply_empty_cloud.ply", ply_head(0), "no points")
    put("ply_face_out_of_range.ply", ply_head(3, extra="element face 1\nproperty list uchar int vertex_indices\n")
        .replace("element face", "element face").replace("end_header", "end_header") + xyz + "3 0 1 10\n", "out of range")
    put("ply_negative_count.ply", ply_head(-5) + xyz, "header")
    put("ply_header_not_text.ply", b"ply\nformat ascii 1.0\nelement vertex 3\xff\xfe\nproperty float x\nend_header\n", "not ASCII")
    put("ply_property_before_element.ply", "ply\nformat ascii 1.0\nproperty float x\nelement vertex 1\nend_header\n0\n", "before any element")
    put("ply_face_two_vertices.ply", ply_head(3, extra="element face 1\nproperty list uchar int vertex_indices\n") + xyz + "2 0 1\n", "need >= 3")
    put("ply_huge_count.ply", ply_head(10 ** 12, "binary_little_endian").encode() + np.zeros(9, "<f4").tobytes(), "truncated")
    faces_head = lambda n: ply_head(3, "binary_little_endian", extra=f"element face {n}\nproperty list uchar int vertex_indices\n").encode()  # noqa: E731
    tri = bytes([3]) + np.array([0, 1, 2], "<i4").tobytes()
    put("ply_face_huge_count.ply", faces_head(10 ** 12) + np.zeros(9, "<f4").tobytes() + tri, "malformed PLY")
    put("ply_ragged_faces_truncated.ply", faces_head(5) + np.zeros(9, "<f4").tobytes() + tri * 2
        + bytes([4]) + np.array([0, 1, 2, 1], "<i4").tobytes(), "malformed PLY")
    put("ply_no_format.ply", "ply\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\nend_header\n" + xyz, "no format")
    # header counts that disagree with the data, and other mis-declared headers (issue #20)
    pts3 = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], "<f4").tobytes()
    put("ply_ascii_extra_rows.ply", ply_head(2) + xyz, "header says 2 vertices but the data holds 3")
    put("ply_binary_extra_records.ply", ply_head(2, "binary_little_endian").encode() + pts3,
        "header says 2 vertices but the data holds 3")
    put("ply_binary_trailing_bytes.ply", ply_head(3, "binary_little_endian").encode() + pts3 + b"junk!", "bytes after")
    lab = "property float x\nproperty float y\nproperty float z\nproperty float label\n"
    put("ply_label_nan.ply", ply_head(3, props=lab) + "0 0 0 1\n1 0 0 nan\n0 1 0 2\n", "one integer per point")
    put("ply_label_fraction.ply", ply_head(3, props=lab) + "0 0 0 1\n1 0 0 1.5\n0 1 0 2\n", "one integer per point")
    put("ply_huge_coords.ply", ply_head(3) + "0 0 0\n1e20 0 0\n0 1 0\n", "implausible coordinates")
    put("ply_duplicate_property.ply", ply_head(3, props=lab.replace("label", "x")) + "0 0 0 1\n1 0 0 1\n0 1 0 1\n",
        "repeats property")
    put("ply_duplicate_element.ply", ply_head(3, extra="element vertex 3\nproperty float x\nproperty float y\n"
                                                      "property float z\n") + xyz + xyz, "repeats element")
    lhead = lambda t: ply_head(3, "binary_little_endian", extra=f"element face 1\nproperty list {t} int vertex_indices\n").encode()  # noqa: E731
    put("ply_list_negative_length.ply", lhead("char") + pts3 + bytes([255]) + np.array([0, 1, 2], "<i4").tobytes(), "list length")
    put("ply_list_huge_length.ply", lhead("int") + pts3 + np.array([2 ** 30, 0, 1, 2], "<i4").tobytes(), "list length")
    dbl = "property double x\nproperty double y\nproperty double z\n"
    put("ply_meta_origin_nan.ply", ply_head(3, props=dbl).replace("element", "comment pc_ovseg origin [NaN, 0, 0]\nelement", 1)
        + xyz, "origin")
    meta = 'comment pc_ovseg field {"name": "q", "shape": [], "dtype": "|O"}\n'
    put("ply_meta_field_object.ply", ply_head(3, props=dbl + "property float q\n").replace("element", meta + "element", 1)
        + "0 0 0 1\n1 0 0 1\n0 1 0 1\n", "dtype")
    # --- PCD ------------------------------------------------------------------------------------
    pts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], "<f4")
    put("pcd_truncated_binary.pcd", pcd_head(100, "binary").encode() + pts.tobytes(), "truncated")
    lit = bytes([11]) + pts[:1].tobytes()  # a valid LZF literal run of 12 bytes
    comp = lambda payload, usize, csize=None: struct.pack("<II", len(payload) if csize is None else csize, usize) + payload  # noqa: E731
    put("pcd_lzf_corrupt.pcd", pcd_head(1, "binary_compressed").encode() + comp(bytes([0xE0, 0xFF, 0x10, 1, 2]), 12), "corrupt")
    put("pcd_lzf_truncated.pcd", pcd_head(1, "binary_compressed").encode() + comp(lit, 12, csize=4000), "truncated")
    put("pcd_lzf_wrong_size.pcd", pcd_head(2, "binary_compressed").encode() + comp(lit, 12), "compressed block")
    put("pcd_lzf_short_output.pcd", pcd_head(1, "binary_compressed", fields="x y z", size="4 4 8", type_="F F F").encode() + comp(lit, 16), "fewer bytes")
    put("pcd_lzf_bomb.pcd", pcd_head(3 * 10 ** 8, "binary_compressed").encode() + comp(lit, 36 * 10 ** 8), "impossible for LZF")
    put("pcd_huge_binary.pcd", pcd_head(10 ** 12, "binary").encode() + pts.tobytes(), "truncated")
    put("pcd_no_data_line.pcd", pcd_head(3).replace("DATA ascii\n", ""), "DATA")
    put("pcd_points_mismatch.pcd", pcd_head(3, width=5) + "0 0 0\n1 0 0\n0 1 0\n", "POINTS")
    put("pcd_fields_size_mismatch.pcd", pcd_head(3, size="4 4") + xyz, "different lengths")
    put("pcd_bad_type.pcd", pcd_head(3, type_="F F X") + xyz, "not supported")
    put("pcd_ascii_short.pcd", pcd_head(4) + xyz, "values")
    put("pcd_ascii_nonnumeric.pcd", pcd_head(3) + "0 0 0\n1 zz 0\n0 1 0\n", "non-numeric")
    put("pcd_nan_unorganised.pcd", pcd_head(3) + "0 0 0\nnan nan nan\n0 1 0\n", "NaN/Inf")
    put("pcd_empty.pcd", pcd_head(0), "no points")
    put("pcd_no_xyz.pcd", pcd_head(3, fields="a b c") + xyz, "x, y, z")
    put("pcd_unknown_data.pcd", pcd_head(3, "zip") + xyz, "DATA kind")
    put("pcd_binary_garbage.pcd", bytes(range(256)) * 4, "not a PCD")
    put("pcd_organised_all_nan.pcd", pcd_head(4, width=2, height=2) + "nan nan nan\n" * 4, "no valid")
    put("pcd_bad_width.pcd", pcd_head(3).replace("WIDTH 3", "WIDTH three") + xyz, "non-integer")
    put("pcd_count_zero.pcd", pcd_head(3, count="1 1 0") + xyz, "non-positive")
    put("pcd_count_negative.pcd", pcd_head(3, count="1 -2 1") + xyz, "non-positive")
    put("pcd_size_zero.pcd", pcd_head(3, size="4 0 4") + xyz, "non-positive")
    put("pcd_size_negative.pcd", pcd_head(3, size="4 4 -4") + xyz, "non-positive")
    put("pcd_count_huge.pcd", pcd_head(3, count=f"1 1 {10 ** 12}") + xyz, "implausible COUNT")
    put("pcd_binary_extra_points.pcd", pcd_head(2, "binary").encode() + pts.tobytes(), "header says 2 points but the data holds 3")
    put("pcd_binary_trailing.pcd", pcd_head(3, "binary").encode() + pts.tobytes() + b"junk!", "bytes after")
    put("pcd_xyz_count2.pcd", pcd_head(3, count="2 1 1") + "0 0 0 0\n1 1 0 0\n0 0 1 0\n", "single values")
    put("pcd_label_nan.pcd", pcd_head(3, fields="x y z label", size="4 4 4 4", type_="F F F F", count="1 1 1 1")
        + "0 0 0 1\n1 0 0 nan\n0 1 0 2\n", "one integer per point")
    # --- LAS ------------------------------------------------------------------------------------
    import laspy
    import datetime
    day = datetime.date(2026, 11, 21)  # fixed creation date: the corpus regenerates byte-identical
    h = laspy.LasHeader(point_format=3, version="1.2")
    h.creation_date = day
    h.scales = [0.01] * 3
    las = laspy.LasData(h)
    las.x, las.y, las.z = [0.0, 1.0, 2.0], [0.0, 1.0, 2.0], [0.0, 1.0, 2.0]
    b = io.BytesIO()
    las.write(b)
    good = b.getvalue()
    put("las_truncated.las", good[:-20], "malformed LAS")
    put("las_bad_signature.las", b"LASX" + good[4:], "malformed LAS")
    put("las_header_only.las", good[:150], "malformed LAS")
    h0 = laspy.LasHeader(point_format=3, version="1.2")
    h0.creation_date = day
    b0 = io.BytesIO()
    laspy.LasData(h0).write(b0)
    put("las_empty.las", b0.getvalue(), "no points")
    bad_scale = bytearray(good)
    struct.pack_into("<3d", bad_scale, 131, 0.0, 0.0, 0.0)  # x/y/z scale factors
    put("las_zero_scale.las", bytes(bad_scale), "scale")
    huge = bytearray(good)
    struct.pack_into("<I", huge, 107, 4_000_000_000)  # legacy point count: 4 billion points
    put("las_huge_count.las", bytes(huge), "malformed LAS")
    put("laz_garbage.laz", b"LASF" + bytes(400), "malformed LAS")
    absurd = bytearray(good)
    struct.pack_into("<3d", absurd, 131, 1e6, 1e6, 1e6)  # 1 km per unit: coordinates reach 2e8 m
    put("las_absurd_extent.las", bytes(absurd), "implausible coordinates")
    # --- arrays ---------------------------------------------------------------------------------
    put("npy_garbage.npy", b"\x93NUMPY garbage garbage", "not a valid .npy")
    np.save(case("npy_1d.npy", "expected an (N, k)"), np.zeros(9, np.float32))
    np.save(case("npy_nan.npy", "NaN/Inf"), np.array([[0, 0, 0], [np.nan, 1, 2]], np.float32))
    np.save(case("npy_5cols_no_layout.npy", "state the layout"), np.zeros((4, 5), np.float32))
    np.save(case("npy_layout_mismatch.npy", "names 6 columns", layout="xyzrgb"), np.zeros((4, 4), np.float32))
    np.save(case("npy_strings.npy", "numeric"), np.array([["a", "b", "c"]]))
    np.save(case("npy_empty.npy", "no points"), np.zeros((0, 3), np.float32))
    put("bin_not_multiple.bin", bytes(13), "whole number", layout="xyz")
    put("bin_no_layout.bin", np.zeros(12, "<f4").tobytes(), "layout")
    np.savez(case("npz_no_points.npz", "no point array"), a=np.zeros(3), b=np.zeros(4))
    put("npz_bad_zip.npz", b"PK\x03\x04" + bytes(60), "not a valid .npz")
    np.savez(case("npz_rgb_mismatch.npz", "'rgb' must be"), xyz=np.zeros((4, 3), np.float32), rgb=np.zeros((3, 3), np.uint8))
    # float64 coordinates read as float32 rows: the low words become absurd values (~1e35)
    f64 = np.array([[0.25, 1.5, 2.75], [3.1, 4.2, 5.3], [6.4, 7.5, 8.6], [9.7, 1.8, 2.9]], "<f8")
    put("bin_float64_as_float32.bin", f64.tobytes(), "wrong dtype or layout", layout="xyz")
    put("bin_nan_coords.bin", np.array([[0, 0, 0], [np.nan, 1, 2]], "<f4").tobytes(), "--layout", layout="xyz")
    np.save(case("npy_huge_coords.npy", "implausible coordinates"), np.array([[0, 0, 0], [1e30, 0, 0]], np.float32))
    np.save(case("npy_label_nan.npy", "one integer per point", layout="xyzl"),
            np.array([[0, 0, 0, 1], [1, 0, 0, np.nan], [0, 1, 0, 2]], np.float32))
    np.savez(case("npz_label_nan.npz", "one integer per point"), xyz=np.zeros((3, 3), np.float32),
             label=np.array([1, np.nan, 2], np.float32))
    # --- labels ---------------------------------------------------------------------------------
    np.save(case("labels_float.npy", "one integer per point", reader="read_labels"), np.zeros(5, np.float32))
    put("labels_bad_size.label", bytes(7), "whole number", reader="read_labels")
    put("labels_text.txt", "1\n2\nthree\n", "one integer per line", reader="read_labels")
    put("labels_fraction.txt", "1\n2.5\n", "non-integer", reader="read_labels")
    put("labels.csv", "1,2\n", "unknown label file type", reader="read_labels")
    put("labels_inf.txt", "1\ninf\n", "NaN/Inf", reader="read_labels")
    put("labels_huge.txt", "1\n1e30\n", "out of range", reader="read_labels")
    # --- meshes ---------------------------------------------------------------------------------
    put("mesh_garbage.obj", "this is not\nan obj file\n", "")
    put("mesh_bad_faces.off", "OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n", "")
    put("mesh_truncated.glb", b"glTF\x02\x00\x00\x00\xff\xff\x00\x00" + bytes(8), "malformed mesh")
    # --- RGB-D folders (7-Scenes layout) ----------------------------------------------------------
    seven("frames_missing_pose", "missing pose", pose=None)
    seven("frames_missing_depth", "missing depth", depth=False)
    seven("frames_aspect_mismatch", "aspect", depth_img=png16(np.full((8, 8), 1500)))
    seven("frames_bad_pose", "4x4", pose="1 0 0\n0 1 0\n0 0 1\n")
    seven("frames_pose_not_rotation", "orthonormal", pose="2 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n")
    seven("frames_depth_8bit", "8-bit", depth_img=png8((6, 8)))
    seven("frames_depth_1bit", "1-bit", depth_img=png1())
    seven("frames_all_poses_invalid", "valid pose", pose="-inf -inf -inf -inf\n" * 4)
    seven("frames_corrupt_color", "not a readable image", color_img=b"\x89PNG\r\n\x1a\n" + bytes(20))
    os.makedirs(os.path.join(HERE, "folder_unknown_layout"), exist_ok=True)
    put("folder_unknown_layout/notes.txt", "nothing here\n", "")
    del EXPECTED["folder_unknown_layout/notes.txt"]
    case("folder_unknown_layout", "not a known RGB-D layout", reader="read_frames")
    os.makedirs(os.path.join(HERE, "a_directory.ply"), exist_ok=True)
    put("a_directory.ply/notes.txt", "a folder named like a file\n", "")
    del EXPECTED["a_directory.ply/notes.txt"]
    case("a_directory.ply", "not a known RGB-D layout")
    # ScanNet export without intrinsics
    put("scannet_no_intrinsics/color/0.png", png8(), "")
    put("scannet_no_intrinsics/depth/0.png", png16(np.full((6, 8), 1500)), "")
    put("scannet_no_intrinsics/pose/0.txt", POSE, "")
    for k in [k for k in EXPECTED if k.startswith("scannet_no_intrinsics/")]:
        del EXPECTED[k]
    case("scannet_no_intrinsics", "intrinsic", reader="read_frames")
    # --- manifests ------------------------------------------------------------------------------
    imgs = {"m_img/c.png": png8(), "m_img/d.png": png16(np.full((6, 8), 1500)),
            "m_img/d_big.png": png16(np.full((6, 8), 1500 * 1000)  .clip(0, 65535))}
    manifest("manifest_wrong_depth_scale.json", "wrong depth scale",
             {"intrinsics": INTR, "depth_scale": 1.0, "frames": [GOOD_FRAME]}, imgs)
    manifest("manifest_no_pose.json", "no pose", {"intrinsics": INTR, "frames": [{"color": "m_img/c.png"}]})
    manifest("manifest_bad_convention.json", "pose_convention",
             {"intrinsics": INTR, "pose_convention": "cam2world", "frames": [GOOD_FRAME]})
    manifest("manifest_missing_image.json", "not found",
             {"intrinsics": INTR, "frames": [{**GOOD_FRAME, "color": "m_img/nope.png"}]})
    manifest("manifest_zero_focal.json", "invalid intrinsics", {"intrinsics": {**INTR, "fx": 0}, "frames": [GOOD_FRAME]})
    manifest("manifest_no_intrinsics.json", "intrinsics", {"frames": [GOOD_FRAME]})
    put("manifest_not_json.json", "{frames: [", "not valid JSON", reader="read_frames")
    manifest("manifest_empty_frames.json", "non-empty", {"intrinsics": INTR, "frames": []})
    manifest("manifest_nan_pose.json", "NaN/Inf", {"intrinsics": INTR, "frames": [
        {**GOOD_FRAME, "pose": [[1, 0, 0, float("nan")], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]}]})
    manifest("manifest_size_mismatch.json", "calibration says",
             {"intrinsics": {**INTR, "width": 16, "height": 12}, "frames": [GOOD_FRAME]})
    manifest("manifest_list.json", "top level", [GOOD_FRAME])  # type: ignore[arg-type]
    manifest("manifest_future_format.json", "unsupported manifest format",
             {"format": "pc_ovseg.frames/9", "intrinsics": INTR, "frames": [GOOD_FRAME]})
    manifest("manifest_unknown_kind.json", "neither", {"cameras": []})
    manifest("manifest_depth_bool.json", "1-bit", {"intrinsics": INTR, "frames": [{**GOOD_FRAME, "depth": "m_img/d_bool.npy"}]},
             {"m_img/d_bool.npy": npy_bytes(np.ones((6, 8), bool))})
    manifest("manifest_depth_complex.json", "depth must hold numbers",
             {"intrinsics": INTR, "frames": [{**GOOD_FRAME, "depth": "m_img/d_complex.npy"}]},
             {"m_img/d_complex.npy": npy_bytes(np.full((6, 8), 1.5 + 1j, np.complex64))})
    manifest("scene_missing_image.json", "not found", {"intrinsics_4x4": np.eye(4).tolist(), "image_size_wh": [8, 6],
                                                       "images": [{"path": "posed/0.jpg", "camera_to_world": np.eye(4).tolist()}]})
    # --- paths ----------------------------------------------------------------------------------
    put("empty_file.ply", b"", "file is empty")
    put("unknown_type.xyz", "0 0 0\n", "unknown file type")
    EXPECTED["does_not_exist.ply"] = {"reader": "read", "expect": "no such file", "missing": True}
    for k, v in EXPECTED.items():
        if not v["expect"]:
            v["expect"] = ""  # any one-line InputError naming the file
    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump(dict(sorted(EXPECTED.items())), f, indent=1)
        f.write("\n")
    print(f"{len(EXPECTED)} cases")
    commands()


# --- whole commands: results, checkpoints, vocabularies, options ----------------------------------
CMD_DIR = os.path.join(HERE, "commands")
CASES: dict[str, dict] = {}


def cmd(name: str, expect: str, *argv):
    """One command line ({C} = this folder, {OUT} = a fresh output folder) that must fail with
    exit 2 and one stderr line containing ``expect``, before doing any real work."""
    CASES[name] = {"argv": [str(a) for a in argv], "expect": expect}


def cput(name: str, data: bytes | str) -> str:
    with open(os.path.join(CMD_DIR, name), "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    return "{C}/" + name


def commands() -> None:
    sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
    import torch

    from pc_ovseg.data import FeatureCloud, PointCloud
    shutil.rmtree(CMD_DIR, ignore_errors=True)
    os.makedirs(CMD_DIR)
    rng = np.random.default_rng(0)
    n = 64
    xyz = rng.uniform(0, 1, (n, 3)).astype(np.float32)
    cloud = cput("cloud.ply", ply_head(n) + "".join(f"{a:.4f} {b:.4f} {c:.4f}\n" for a, b, c in xyz))
    gt = cput("gt.npy", npy_bytes(rng.integers(0, 3, n).astype(np.int32)))
    feats = np.eye(3, dtype=np.float16)[rng.integers(0, 3, n)]
    good = FeatureCloud(PointCloud(xyz), feats, np.ones(n, np.float32), np.ones(n, np.uint16),
                        "labels:wall,floor,chair", ["wall", "floor", "chair"])
    good.save(os.path.join(CMD_DIR, "fused_good.npz"))
    raw = open(os.path.join(CMD_DIR, "fused_good.npz"), "rb").read()

    def npz(name: str, **arrays) -> str:
        b = io.BytesIO()
        np.savez(b, **arrays)
        return cput(name, b.getvalue())

    def header(**kw) -> np.ndarray:
        h = {"encoder": "labels:wall,floor,chair", "class_names": ["wall", "floor", "chair"], "meta": {},
             "format": "pc_ovseg.FeatureCloud/1", **kw}
        return np.frombuffer(json.dumps(h).encode(), np.uint8)

    ok = dict(xyz=xyz, origin=np.zeros(3), features=feats, weight=np.ones(n, np.float32),
              view_count=np.ones(n, np.uint16), header=header())
    # fused results: opened by query, view, eval, distill, predict
    results = {
        "fused_junk.npz": (cput("fused_junk.npz", b"PK\x03\x04 this is not a zip archive" * 8), "not a readable .npz"),
        "fused_truncated.npz": (cput("fused_truncated.npz", raw[: len(raw) // 2]), "not a pc_ovseg feature file"),
        "fused_no_header.npz": (npz("fused_no_header.npz", **{k: v for k, v in ok.items() if k != "header"}),
                                "header is not a file"),
        "fused_bad_header.npz": (npz("fused_bad_header.npz", **{**ok, "header": np.frombuffer(b"{not json", np.uint8)}),
                                 "not a pc_ovseg feature file"),
        "fused_count_mismatch.npz": (npz("fused_count_mismatch.npz", **{**ok, "features": feats[:-5]}),
                                     "expected (64, D) for 64 points"),
        "fused_weight_mismatch.npz": (npz("fused_weight_mismatch.npz", **{**ok, "weight": np.ones(n + 3, np.float32)}),
                                      "weight has shape"),
        "fused_nan.npz": (npz("fused_nan.npz", **{**ok, "features": np.full_like(feats, np.nan)}), "non-finite"),
        "fused_1d.npz": (npz("fused_1d.npz", **{**ok, "features": feats[:, 0]}), "features have shape"),
        "fused_names_mismatch.npz": (npz("fused_names_mismatch.npz", **{**ok, "header": header(class_names=["a"])}),
                                     "class names for 3-d"),
        "fused_xyz_bad.npz": (npz("fused_xyz_bad.npz", **{**ok, "xyz": xyz[:, :2]}), "damaged feature file"),
        "fused_negative_weight.npz": (npz("fused_negative_weight.npz", **{**ok, "weight": -np.ones(n, np.float32)}),
                                      "weights must be finite"),
        "fused_plain_array.npz": (cput("fused_plain_array.npz", npy_bytes(xyz)), "not a pc_ovseg feature file"),
    }
    for name, (path, expect) in results.items():
        cmd(f"query {name}", expect, "query", path, "--labels", "wall,floor", "--out", "{OUT}")
    for name in ("fused_junk.npz", "fused_count_mismatch.npz", "fused_nan.npz"):
        path, expect = results[name]
        cmd(f"query --text {name}", expect, "query", path, "--text", "a chair", "--out", "{OUT}")
        cmd(f"distill {name}", expect, "distill", path, "--out", "{OUT}/s.pt", "--epochs", 1)
        cmd(f"eval {name}", expect, "eval", path, "--gt", gt, "--classes", "wall,floor,chair")

    # checkpoints: read by predict, distill (resuming), run --distilled, --clip-weights, --sam-checkpoint
    class Payload:  # unpickling runs os.system; the loader must refuse it (the command is harmless anyway)
        def __reduce__(self):
            return (os.system, ("true",))
    b = io.BytesIO()
    torch.save({"format": "pc_ovseg.distill/1", "x": Payload()}, b)
    cput("ckpt_code.pt", b.getvalue())
    cput("ckpt_junk.pt", b"definitely not a checkpoint\n" * 4)
    b = io.BytesIO()
    torch.save({"w": torch.zeros(3)}, b)
    cput("ckpt_truncated.pt", b.getvalue()[:200])
    cput("ckpt_foreign.pt", b.getvalue())
    b = io.BytesIO()
    torch.save({"format": "pc_ovseg.distill/1", "model": {}}, b)
    cput("ckpt_damaged.pt", b.getvalue())
    b = io.BytesIO()
    torch.save([1, 2, 3], b)
    cput("ckpt_list.pt", b.getvalue())
    ckpts = {"ckpt_code.pt": "refused", "ckpt_junk.pt": "not a checkpoint", "ckpt_truncated.pt": "not a checkpoint",
             "ckpt_foreign.pt": "neither a pc_ovseg", "ckpt_damaged.pt": "damaged pc_ovseg checkpoint",
             "ckpt_list.pt": "neither a pc_ovseg"}
    for name, expect in ckpts.items():
        cmd(f"predict {name}", expect, "predict", "{C}/" + name, cloud, "--out", "{OUT}/p.npz")
    room = ["{C}/cloud.ply", "--labels", "wall,floor", "--out", "{OUT}", "--max-views", 1]
    for name in ("ckpt_code.pt", "ckpt_junk.pt", "ckpt_damaged.pt"):
        cmd(f"run --distilled {name}", ckpts[name], "run", *room, "--distilled", "{C}/" + name)
    for name in ("ckpt_code.pt", "ckpt_junk.pt"):
        cmd(f"run --clip-weights {name}", ckpts[name], "run", *room, "--clip-model", "pcovseg-tiny-ViT",
            "--clip-weights", "{C}/" + name, "--masks", "superpixels")
    cmd("distill resume from junk", "not a checkpoint", "distill", "{C}/fused_good.npz", "--out", "{C}/ckpt_junk.pt")
    cmd("distill resume from code", "refused", "distill", "{C}/fused_good.npz", "--out", "{C}/ckpt_code.pt")
    cmd("distill --dataset missing dir", "is not a directory of fused scenes", "distill", "--dataset",
        "{C}/no_such_dir", "--out", "{OUT}/s.pt")
    cmd("distill --val without --dataset", "--val needs --dataset", "distill", "{C}/fused_good.npz", "--val",
        "{C}", "--out", "{OUT}/s.pt")

    # vocabularies
    cput("vocab_empty.txt", "")
    cput("vocab_blank.txt", "\n  \n\n")
    cput("vocab_binary.txt", bytes(range(256)))
    cput("vocab_bad.json", "{\"names\": [")
    vocab = {"empty --labels": ("", "empty"), "blank --labels": (" , ,", "class"),
             "empty vocabulary file": ("{C}/vocab_empty.txt", "vocab_empty.txt"),
             "blank vocabulary file": ("{C}/vocab_blank.txt", "vocab_blank.txt"),
             "binary vocabulary file": ("{C}/vocab_binary.txt", "vocab_binary.txt"),
             "broken JSON vocabulary": ("{C}/vocab_bad.json", "vocab_bad.json"),
             "unknown label set": ("nosuchlabelset", "nosuchlabelset")}
    for name, (arg, expect) in vocab.items():
        cmd(f"query {name}", expect, "query", "{C}/fused_good.npz", "--labels", arg, "--out", "{OUT}")
    for name in ("empty --labels", "unknown label set", "binary vocabulary file"):
        arg, expect = vocab[name]
        cmd(f"run {name}", expect, "run", "{C}/cloud.ply", "--labels", arg, "--out", "{OUT}")
        cmd(f"eval --classes {name}", expect, "eval", "{C}/fused_good.npz", "--gt", gt, "--classes", arg)

    # numeric options: refused at parse time, in one line naming the option
    bad_run = {"--voxel-size": ["0", "-1", "nan", "inf"], "--max-views": ["0", "-3", "two"], "--min-views": ["0"],
               "--zoom": ["0", "-1"], "--blend": ["nan", "1.5"], "--dense-short-side": ["0"],
               "--width": ["0", "100000"], "--height": ["-480"], "--tta": ["0"], "--sam-points-per-side": ["0"],
               "--sam-pred-iou-thresh": ["nan"], "--cloud-frames": ["0"]}
    for opt, values in bad_run.items():
        for v in values:
            cmd(f"run {opt} {v}", f"argument {opt}", "run", *room[:5], opt, v)
    for opt, v in (("--epochs", "-1"), ("--lr", "nan"), ("--lr", "0"), ("--batch-size", "0"),
                   ("--max-minutes", "0"), ("--voxel-size", "nan")):
        cmd(f"distill {opt} {v}", f"argument {opt}", "distill", "{C}/fused_good.npz", "--out", "{OUT}/s.pt", opt, v)
    for opt, v in (("--tta", "0"), ("--voxel-size", "-1")):
        cmd(f"predict {opt} {v}", f"argument {opt}", "predict", "{C}/ckpt_junk.pt", cloud, "--out", "{OUT}/p.npz", opt, v)
    for opt, v in (("--port", "70000"), ("--port", "-1"), ("--max-display-points", "0"), ("--point-size", "nan")):
        cmd(f"view {opt} {v}", f"argument {opt}", "view", "{C}/fused_good.npz", "--no-browser", opt, v)
    for opt, v in (("--threshold", "nan"), ("--min-points", "-1")):
        cmd(f"query {opt} {v}", f"argument {opt}", "query", "{C}/fused_good.npz", "--text", "chair",
            "--out", "{OUT}", opt, v)
    cmd("render --width 0", "argument --width", "render", cloud, "--out", "{OUT}", "--width", "0")
    cmd("run --device", "cuda:7", "run", *room[:5], "--device", "cuda:7")
    cmd("predict --device", "nonsense", "predict", "{C}/ckpt_junk.pt", cloud, "--out", "{OUT}/p.npz",
        "--device", "nonsense")
    cmd("eval --ignore", "--ignore", "eval", "{C}/fused_good.npz", "--gt", gt, "--ignore", "a,b")

    map_cases(cloud)

    # run configuration files
    cput("config_unknown.yaml", "views:\n  max_view: 3\n")
    cput("config_section.yaml", "viewz:\n  max_views: 3\n")
    cput("config_range.yaml", "views:\n  zoom: 0\n")
    cput("config_type.yaml", "fusion:\n  segments: lots\n")
    cput("config_broken.yaml", "views: [\n")
    cput("config_list.json", "[1, 2]")
    for name, expect in (("config_unknown.yaml", "unknown option views.max_view"),
                         ("config_section.yaml", "unknown section 'viewz'"), ("config_range.yaml", "views.zoom"),
                         ("config_type.yaml", "fusion.segments"), ("config_broken.yaml", "not valid YAML"),
                         ("config_list.json", "mapping")):
        cmd(f"run --config {name}", expect, "run", *room[:5], "--config", "{C}/" + name)
    with open(os.path.join(CMD_DIR, "cases.json"), "w") as f:
        json.dump(dict(sorted(CASES.items())), f, indent=1)
        f.write("\n")
    print(f"{len(CASES)} command cases")


def map_cases(cloud: str) -> None:
    """``pc-ovseg map``: ROS bags that cannot be mapped (tiny ROS 1 bags written with rosbags),
    inputs without depth, and the mapping options."""
    sys.path.insert(0, os.path.dirname(HERE))
    from rosbag_fixtures import write_bag

    from pc_ovseg.data import Camera, RGBDFrame
    K = np.array([[8.0, 0, 4.0], [0, 8.0, 3.0], [0, 0, 1]])
    frames = []
    for k in range(2):
        pose = np.eye(4)
        pose[0, 3] = 0.01 * k
        frames.append(RGBDFrame(Camera(K, pose, 8, 6), np.full((6, 8, 3), 100 + k, np.uint8),
                                np.full((6, 8), 1.5, np.float32), f"f{k}"))
    bags = {"bag_no_depth.bag": (dict(no_depth=True), "no depth topic"),
            "bag_unsynced.bag": (dict(color_offset=0.5), "no message within 0.02 s of any depth image"),
            "bag_encoding.bag": (dict(color="yuv422"), "unknown image encoding 'yuv422'"),
            "bag_no_transform.bag": (dict(pose="tf", skip_tf_static=True), "no transform from 'camera_optical'"),
            "bag_all_poses_bad.bag": (dict(bad_pose_at=(0, 1)), "has a valid pose")}
    for name, (kw, expect) in bags.items():
        write_bag(os.path.join(CMD_DIR, name), frames, ros1=True, **kw)
        cmd(f"map {name}", expect, "map", "{C}/" + name, "--out", "{OUT}", "--geometry-only")
    cmd("map bag --topics unknown", "topic /nope is not in the bag", "map", "{C}/bag_unsynced.bag", "--out",
        "{OUT}", "--geometry-only", "--topics", "/nope")
    cmd("map a cloud", "not an RGB-D sequence", "map", cloud, "--out", "{OUT}", "--geometry-only")
    cmd("map missing input", "no such file", "map", "{C}/no_such_folder", "--out", "{OUT}", "--geometry-only")
    for opt, v in (("--every", "0"), ("--voxel-size", "0"), ("--keyframe-every", "-1"), ("--max-voxels", "10"),
                   ("--sync", "nan"), ("--pending", "0")):
        cmd(f"map {opt} {v}", f"argument {opt}", "map", "{C}/bag_unsynced.bag", "--out", "{OUT}", opt, v)


if __name__ == "__main__":
    sys.exit(main())
