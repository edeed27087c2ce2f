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
    # --- LAS ------------------------------------------------------------------------------------
    import laspy
    h = laspy.LasHeader(point_format=3, version="1.2")
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
    # --- labels ---------------------------------------------------------------------------------
    np.save(case("labels_float.npy", "one integer per point", reader="read_labels"), np.zeros(5, np.float32))
    put("labels_bad_size.label", bytes(7), "whole number", reader="read_labels")
    put("labels_text.txt", "1\n2\nthree\n", "one integer per line", reader="read_labels")
    put("labels_fraction.txt", "1\n2.5\n", "non-integer", reader="read_labels")
    put("labels.csv", "1,2\n", "unknown label file type", reader="read_labels")
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


if __name__ == "__main__":
    sys.exit(main())
