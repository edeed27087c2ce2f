"""Tiny copies of S3DIS, Matterport3D, SensatUrban and SemanticKITTI in their official layouts,
made from the real shared data (``../shared/data``), each writer returning what it wrote so the
tests can compare a reader's output with it array for array.

- ``write_s3dis``: rooms of ``Area_N/<room>/Annotations/<class>_<k>.txt`` from the labelled
  ScanNet scene0000_00, one file per object (NYU40 -> S3DIS for a few classes, the rest clutter;
  otherfurniture is written as ``stairs`` to exercise that alias).
- ``write_matterport``: houses of region meshes (``region<N>.ply`` with per-face category_id,
  segment_id, material_id; fsegs/semseg JSON; ``metadata/category_mapping.tsv``) cut from the same
  scene, faces a Delaunay triangulation of each region's points in plan; one house also gets an
  ``undistorted_camera_parameters`` .conf with frames rendered from the cloud.
- ``write_sensaturban``: ``train/`` and ``test/`` tiles (binary PLY x y z red green blue class)
  from the real LAS files, ASPRS codes mapped onto SensatUrban's classes.
- ``write_semantickitti``: ``sequences/08`` (the real labelled scan of sequence 00 and two copies
  seen from moved scanner poses, poses.txt, calib.txt), ``sequences/00`` (the three real scans of
  sequence 01) and ``sequences/11`` (a test scan without labels).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dataset_fixtures import (NYU40_NAMES, RAW_CATEGORIES, load_labelled, render_frames,
                              segments_of)

# --- S3DIS ------------------------------------------------------------------------------------

NYU40_TO_S3DIS = {1: "wall", 2: "floor", 22: "ceiling", 6: "sofa", 7: "table", 14: "table", 8: "door",
                  9: "window", 15: "bookcase", 38: "column", 5: "chair", 39: "stairs"}
S3DIS_ROOMS = {  # (area, room): (rotation about z in degrees, shift, fraction of points kept)
    ("Area_5", "office_1"): (0.0, (0.0, 0.0, 0.0), 1.0),
    ("Area_1", "office_10"): (25.0, (3.0, -1.0, 0.0), 0.2),
    ("Area_1", "office_2"): (-40.0, (-2.0, 5.0, 0.5), 0.3),
}


def _moved(xyz: np.ndarray, deg: float, t) -> np.ndarray:
    a = np.radians(deg)
    R = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    return xyz.astype(np.float64) @ R.T + np.asarray(t, np.float64)


def write_s3dis(root, shared) -> dict[str, dict]:
    """S3DIS rooms; returns per scene name the points, colours, labels (s3dis13 ids) and instances
    in the reader's order (files by class name, then k), and the files written."""
    from pc_ovseg.labels import load_labelset
    ls = load_labelset("s3dis13")
    root = Path(root)
    real = load_labelled(shared)
    out = {}
    for (area, room), (deg, t, keep) in S3DIS_ROOMS.items():
        rng = np.random.default_rng(len(room) + int(area[-1]))
        idx = np.arange(len(real["xyz"])) if keep >= 1 else np.flatnonzero(rng.random(len(real["xyz"])) < keep)
        xyz = np.round(_moved(real["xyz"][idx], deg, t), 3)
        rgb, sem, ins = real["rgb"][idx], real["sem"][idx], real["ins"][idx]
        ann = root / area / room / "Annotations"
        ann.mkdir(parents=True, exist_ok=True)
        per_class: dict[str, int] = {}
        files = []
        for k in np.unique(ins[ins > 0]):
            m = np.flatnonzero(ins == k)
            cls = NYU40_TO_S3DIS.get(int(sem[m[0]]), "clutter")
            per_class[cls] = per_class.get(cls, 0) + 1
            files.append((cls, per_class[cls], m))
        for cls, j, m in files:
            rows = np.column_stack([xyz[m], rgb[m]])
            np.savetxt(ann / f"{cls}_{j}.txt", rows, fmt="%.3f %.3f %.3f %d %d %d")
        # what the release also holds and a reader must skip
        np.savetxt(root / area / room / f"{room}.txt", np.column_stack([xyz, rgb]), fmt="%.3f %.3f %.3f %d %d %d")
        (ann / f"._{files[0][0]}_1.txt").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")
        (root / area / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
        files.sort(key=lambda f: (f[0], f[1]))
        order = np.concatenate([m for _, _, m in files])
        cid = {c: ls.id_of("clutter" if c == "stairs" else c) for c, _, _ in files}
        out[f"{area}_{room}"] = {
            "xyz": xyz[order], "rgb": rgb[order],
            "labels": np.concatenate([np.full(len(m), cid[c]) for c, _, m in files]),
            "instances": np.concatenate([np.full(len(m), i + 1) for i, (_, _, m) in enumerate(files)]),
            "files": [f"{c}_{j}.txt" for c, j, _ in files]}
    return out


# --- Matterport3D -----------------------------------------------------------------------------

MP_HOUSES = {"17DRP5sb8fy": "val", "1LXtFkjw3qL": "train"}
MP_TSV_HEADER = ["index", "raw_category", "category", "count", "nyuId", "nyu40id", "eigen13id", "nyuClass",
                 "nyu40class", "eigen13class", "ModelNet40", "ModelNet10", "ShapeNetCore55", "synsetoffset",
                 "wnsynsetid", "wnsynsetkey", "mpcat40", "mpcat40index"]
# (eye, target) of the frames: camA and camD stand in region0, camB in region1, camC 50 m away (in none)
MP_FRAME_EYES = {"camA": ((-1.8, -2.5, 1.5), (-2.5, 2.5, 0.4)), "camB": ((1.8, 2.5, 1.5), (2.5, -2.5, 0.4)),
                 "camC": ((50.0, 0.0, 1.4), (0.0, 0.0, 0.6)), "camD": ((-2.5, 2.0, 1.2), (-1.5, -2.5, 0.4))}
_GL = np.diag([1.0, -1.0, -1.0, 1.0])


def mp_tsv_rows() -> list[dict]:
    """category_mapping.tsv rows: one per raw category of the ScanNet fixture (nyuClass = the raw
    name, so several rows share an NYU40 id), then 'void' and 'unknown' (nyu40id 0)."""
    rows = []
    for nyu, names in sorted(RAW_CATEGORIES.items()):
        for name in names:
            rows.append({"raw_category": name, "category": name, "nyu40id": nyu, "nyuClass": name,
                         "nyu40class": NYU40_NAMES[nyu]})
    rows += [{"raw_category": n, "category": n, "nyu40id": 0, "nyuClass": n, "nyu40class": ""} for n in ("void", "unknown")]
    for i, r in enumerate(rows, 1):
        r["index"] = i
    return rows


def _category_ids(sem: np.ndarray, ins: np.ndarray, rows: list[dict]) -> np.ndarray:
    """category_id per point: the row of one of its NYU40 class's raw names (cycled by instance);
    unannotated points alternate between 'void' and -1."""
    by_nyu: dict[int, list[int]] = {}
    for r in rows:
        by_nyu.setdefault(r["nyu40id"], []).append(r["index"])
    void = next(r["index"] for r in rows if r["nyuClass"] == "void")
    out = np.empty(len(sem), np.int64)
    for i, (s, k) in enumerate(zip(sem.tolist(), ins.tolist())):
        if s == 0 or k == 0:
            out[i] = void if i % 2 else -1
        else:
            cands = by_nyu[s]
            out[i] = cands[k % len(cands)]
    return out


def write_region_ply(path, xyz, rgb, faces, category_id, segment_id, material_id) -> None:
    """A region PLY as Matterport ships it: x y z nx ny nz tx ty float, red green blue uchar;
    faces: uchar-int vertex_indices, int material_id, segment_id, category_id."""
    n = len(xyz)
    v = np.zeros(n, [(c, "<f4") for c in ("x", "y", "z", "nx", "ny", "nz", "tx", "ty")]
                 + [(c, "u1") for c in ("red", "green", "blue")])
    v["x"], v["y"], v["z"] = np.asarray(xyz, np.float32).T
    v["red"], v["green"], v["blue"] = np.asarray(rgb, np.uint8).T
    f = np.empty(len(faces), [("k", "u1"), ("v", "<i4", (3,)), ("material_id", "<i4"), ("segment_id", "<i4"),
                              ("category_id", "<i4")])
    f["k"], f["v"] = 3, faces
    f["material_id"], f["segment_id"], f["category_id"] = material_id, segment_id, category_id
    head = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    head += [f"property float {c}" for c in ("x", "y", "z", "nx", "ny", "nz", "tx", "ty")]
    head += [f"property uchar {c}" for c in ("red", "green", "blue")]
    head += [f"element face {len(faces)}", "property list uchar int vertex_indices", "property int material_id",
             "property int segment_id", "property int category_id", "end_header"]
    Path(path).write_bytes(("\n".join(head) + "\n").encode() + v.tobytes() + f.tobytes())


def mp_cameras() -> dict[str, np.ndarray]:
    """OpenCV camera-to-world poses of the fixture frames, each looking across the room."""
    from pc_ovseg.views.cameras import look_at
    return {name: look_at(np.asarray(eye), np.asarray(target)) for name, (eye, target) in MP_FRAME_EYES.items()}


def write_matterport(root, shared, *, frames: bool = True) -> dict:
    """Two houses: the val house is half of the real points cut at the median x into region0 and
    region1 (with frames when ``frames``), the train house one region of a turned 30 % subsample.
    Returns per scene name its vertices, colours, faces, per-face category_id and segment, the
    objectIds of its semseg groups, and the tsv rows; under 'frames' the written frames."""
    from PIL import Image
    from scipy.spatial import Delaunay
    from pc_ovseg.data import Camera
    from pc_ovseg.io.rgbd import resample_depth
    root = Path(root)
    real = load_labelled(shared)
    n = len(real["xyz"])
    rows = mp_tsv_rows()
    meta = root / "metadata"
    meta.mkdir(parents=True, exist_ok=True)
    with open(meta / "category_mapping.tsv", "w", encoding="utf-8") as f:
        f.write("\t".join(MP_TSV_HEADER) + "\n")
        for r in rows:
            vals = {**{h: "" for h in MP_TSV_HEADER}, **r, "count": 1, "nyuId": r["nyu40id"]}
            f.write("\t".join(str(vals[h]) for h in MP_TSV_HEADER) + "\n")
    out: dict = {"rows": rows, "frames": {}}
    rng = np.random.default_rng(7)
    for house, split in MP_HOUSES.items():
        (root / f"scenes_{split}.txt").write_text(f"{house}\n")
        if split == "val":
            idx = np.flatnonzero(rng.random(n) < 0.5)
            xyz = real["xyz"][idx].astype(np.float64)
            cut = np.median(xyz[:, 0])
            parts = {0: np.flatnonzero(xyz[:, 0] < cut), 1: np.flatnonzero(xyz[:, 0] >= cut)}
        else:
            idx = np.flatnonzero(rng.random(n) < 0.3)
            xyz = _moved(real["xyz"][idx], 30.0, (1.0, 2.0, 0.0))
            parts = {0: np.arange(len(idx))}
        rgb, sem, ins = real["rgb"][idx], real["sem"][idx], real["ins"][idx]
        cat = _category_ids(sem, ins, rows)
        seg = segments_of(real["xyz"][idx], ins)
        rdir = root / "v1" / "scans" / house / "region_segmentations" / house / "region_segmentations"
        rdir.mkdir(parents=True, exist_ok=True)
        for r, p in parts.items():
            vx = xyz[p].astype(np.float32)
            faces = Delaunay(vx[:, :2].astype(np.float64)).simplices.astype(np.int64)
            first = p[faces[:, 0]]
            fcat, fseg = cat[first], seg[first]
            write_region_ply(rdir / f"region{r}.ply", vx, rgb[p], faces, fcat, fseg, np.arange(len(faces)) % 5)
            (rdir / f"region{r}.fsegs.json").write_text(json.dumps({"segIndices": fseg.tolist()}))
            groups, object_ids = [], []
            for k in np.unique(ins[first][ins[first] > 0]):
                m = ins[first] == k
                groups.append({"id": len(groups), "objectId": int(k) - 1, "label": NYU40_NAMES.get(int(sem[first][m][0]), "x"),
                               "segments": np.unique(fseg[m]).tolist()})
                object_ids.append(int(k) - 1)
            (rdir / f"region{r}.semseg.json").write_text(json.dumps({"segGroups": groups}))
            out[f"{house}_region{r}"] = {"xyz": vx, "rgb": rgb[p], "faces": faces, "category_id": fcat,
                                         "segment": fseg, "object_ids": object_ids}
        if split == "val" and frames:
            out["frames"] = _write_mp_frames(root, house, xyz.astype(np.float32), rgb, Image, Camera, resample_depth)
    return out


def _write_mp_frames(root: Path, house: str, xyz, rgb, Image, Camera, resample_depth) -> dict:
    """The undistorted_* folders of a house: colour JPEGs and 0.25 mm depth PNGs rendered from the
    cloud, and the .conf with OpenGL-axis camera-to-world poses."""
    base = root / "v1" / "scans" / house
    dirs = {k: base / k / house / k for k in ("undistorted_color_images", "undistorted_depth_images",
                                                "undistorted_camera_parameters")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    cams = mp_cameras()
    rendered = render_frames(xyz, rgb, [(p, 0.1) for p in cams.values()])
    lines = ["dataset matterport", f"n_images {len(cams)}", "depth_directory undistorted_depth_images",
             "color_directory undistorted_color_images", ""]
    written = {}
    for k, (name, (K_c, K_d, color, depth_mm, pose)) in enumerate(zip(cams, rendered)):
        h, w = depth_mm.shape
        on_color = resample_depth(depth_mm.astype(np.float32) / 1000.0, K_d,
                                  Camera(K_c, pose, color.shape[1], color.shape[0]).scaled(w, h).K)
        depth = np.clip(np.rint(on_color * 4000.0), 0, 65535).astype(np.uint16)
        cname, dname = f"{name}_i{k % 3}_{k}.jpg", f"{name}_d{k % 3}_{k}.png"
        Image.fromarray(color).save(dirs["undistorted_color_images"] / cname, quality=95)
        Image.fromarray(depth).save(dirs["undistorted_depth_images"] / dname)
        gl = pose @ _GL
        lines.append("intrinsics_matrix " + " ".join(f"{v:.6f}" for v in K_c.reshape(-1)))
        lines.append(f"scan {dname} {cname} " + " ".join(f"{v:.9f}" for v in gl.reshape(-1)))
        written[name] = {"K": K_c, "pose": pose, "color": cname, "depth": depth, "index": k}
    (dirs["undistorted_camera_parameters"] / f"{house}.conf").write_text("\n".join(lines) + "\n")
    return written


# --- SensatUrban ------------------------------------------------------------------------------

ASPRS_TO_SENSAT = {2: 0, 3: 0, 4: 1, 5: 1, 6: 2, 9: 12, 10: 6, 11: 7, 13: 8, 14: 8, 15: 8, 16: 8, 17: 4}
SENSAT_TILES = {  # tile: (folder, LAS file, shift in metres, max points, labelled)
    "birmingham_block_1": ("train", "sample_c.las", 0.0, None, True),
    "birmingham_block_5": ("train", "warsaw_small.las", 0.0, None, True),
    "cambridge_block_10": ("train", "mvk-thin.las", 0.0, None, True),
    "cambridge_block_7": ("train", "autzen_trim.las", 0.0, 8000, True),
    "birmingham_block_0": ("train", "sample_c.las", 250.0, None, True),
    "birmingham_block_10": ("train", "warsaw_small.las", 100.0, None, True),
    "birmingham_block_3": ("train", "mvk-thin.las", 0.0, 3000, True),
    "birmingham_block_2": ("test", "warsaw_small.las", 500.0, None, False),
}


def write_sensaturban_ply(path, xyz, rgb, cls=None) -> None:
    """Binary little-endian PLY: x y z double, red green blue uchar (+ class uchar)."""
    cols = [("x", "<f8"), ("y", "<f8"), ("z", "<f8"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    if cls is not None:
        cols.append(("class", "u1"))
    v = np.empty(len(xyz), cols)
    v["x"], v["y"], v["z"] = np.asarray(xyz, np.float64).T
    v["red"], v["green"], v["blue"] = np.asarray(rgb, np.uint8).T
    if cls is not None:
        v["class"] = cls
    t = {"<f8": "double", "u1": "uchar"}
    head = ["ply", "format binary_little_endian 1.0", f"element vertex {len(xyz)}"]
    head += [f"property {t[d]} {c}" for c, d in cols] + ["end_header"]
    Path(path).write_bytes(("\n".join(head) + "\n").encode() + v.tobytes())


def read_las_points(path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xyz float64, rgb uint8 (grey where the file has none), ASPRS class) of a LAS file."""
    import laspy
    las = laspy.read(path)
    xyz = np.column_stack([np.asarray(las.x), np.asarray(las.y), np.asarray(las.z)])
    if "red" in las.point_format.dimension_names:
        c = np.column_stack([np.asarray(las.red), np.asarray(las.green), np.asarray(las.blue)])
        rgb = (c >> 8).astype(np.uint8) if c.max() > 255 else c.astype(np.uint8)
    else:
        rgb = np.full((len(xyz), 3), 128, np.uint8)
    return xyz, rgb, np.asarray(las.classification).astype(np.int64)


def write_sensaturban(root, shared) -> dict[str, dict]:
    """Tiles of SENSAT_TILES; returns per tile its xyz (float64), rgb and labels (-1 in test)."""
    root = Path(root)
    out = {}
    for tile, (folder, las, shift, cap, labelled) in SENSAT_TILES.items():
        xyz, rgb, code = read_las_points(Path(shared) / "las" / las)
        keep = np.flatnonzero(np.isin(code, list(ASPRS_TO_SENSAT)))
        if cap is not None and len(keep) > cap:
            keep = keep[np.random.default_rng(len(tile)).choice(len(keep), cap, replace=False)]
            keep.sort()
        xyz, rgb = xyz[keep] + [shift, 0.0, 0.0], rgb[keep]
        cls = np.array([ASPRS_TO_SENSAT[c] for c in code[keep].tolist()], np.int64)
        (root / folder).mkdir(parents=True, exist_ok=True)
        write_sensaturban_ply(root / folder / f"{tile}.ply", xyz, rgb, cls if labelled else None)
        out[tile] = {"xyz": xyz, "rgb": rgb, "labels": cls if labelled else np.full(len(xyz), -1)}
    return out


# --- SemanticKITTI ------------------------------------------------------------------------------

# KITTI odometry calibration of sequences 00-02 (velodyne -> camera 0, and the rectified projections)
KITTI_TR = np.array([[4.276802385584e-04, -9.999672484946e-01, -8.084491683471e-03, -1.198459927713e-02],
                     [-7.210626507497e-03, 8.081198471645e-03, -9.999413164504e-01, -5.403984729748e-02],
                     [9.999738645903e-01, 4.859485810390e-04, -7.206933692422e-03, -2.921968648686e-01],
                     [0.0, 0.0, 0.0, 1.0]])
KITTI_P = {"P0": [718.856, 0, 607.1928, 0, 0, 718.856, 185.2157, 0, 0, 0, 1, 0],
           "P1": [718.856, 0, 607.1928, -386.1448, 0, 718.856, 185.2157, 0, 0, 0, 1, 0],
           "P2": [718.856, 0, 607.1928, 45.38225, 0, 718.856, 185.2157, -0.1130887, 0, 0, 1, 0.003779761],
           "P3": [718.856, 0, 607.1928, -337.2877, 0, 718.856, 185.2157, 2.369057, 0, 0, 1, 0.004915215]}
# scanner poses of sequence 08's three fixture scans in the first scan's frame: (yaw degrees, x, y)
KITTI_MOVES = [(0.0, 0.0, 0.0), (4.0, 1.8, 0.1), (9.0, 3.5, 0.4)]


def kitti_lidar_poses() -> list[np.ndarray]:
    out = []
    for deg, x, y in KITTI_MOVES:
        a = np.radians(deg)
        T = np.eye(4)
        T[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
        T[:3, 3] = [x, y, 0.05 * x]
        out.append(T)
    return out


def raw_kitti_labels(learned: np.ndarray, instances: np.ndarray) -> np.ndarray:
    """Raw .label ids for learning-map ids: each class's smallest raw id, except moving-car (252)
    for cars of odd instance id and outlier (1) for every other unlabeled point; instance << 16."""
    from pc_ovseg.labels import load_labelset
    ls = load_labelset("semantickitti19")
    raw = ls.to_raw(learned).astype(np.int64)
    raw[(learned == 1) & (instances % 2 == 1)] = 252
    zero = np.flatnonzero(learned == 0)
    raw[zero[1::2]] = 1
    return (raw | (instances.astype(np.int64) << 16)).astype(np.uint32)


def _write_scan(d: Path, scan: str, xyz: np.ndarray, raw: np.ndarray | None) -> None:
    (d / "velodyne").mkdir(parents=True, exist_ok=True)
    pts = np.zeros((len(xyz), 4), np.float32)   # the sample has no remission: 0
    pts[:, :3] = xyz
    pts.tofile(d / "velodyne" / f"{scan}.bin")
    if raw is not None:
        (d / "labels").mkdir(parents=True, exist_ok=True)
        np.asarray(raw, "<u4").tofile(d / "labels" / f"{scan}.label")


def write_semantickitti(root, shared) -> dict[str, dict]:
    """The sequences described in the module docstring; returns per scene its xyz (float32, as
    written), learned labels, raw labels, and (sequence 08) world points and scanner poses."""
    root = Path(root)
    sk = Path(shared) / "semantickitti"
    out = {}
    seq = root / "sequences" / "08"
    xyz0 = np.load(sk / "points_seq00_000000.npy").astype(np.float64)
    lab0 = np.load(sk / "labels_seq00_000000.npy").reshape(-1).astype(np.int64)
    ins0 = np.load(sk / "instances_seq00_000000.npy").reshape(-1).astype(np.int64)
    raw0 = raw_kitti_labels(lab0, ins0)
    poses = kitti_lidar_poses()
    keep = [np.arange(len(xyz0)), np.arange(len(xyz0)), np.flatnonzero(np.random.default_rng(3).random(len(xyz0)) < 0.7)]
    for k, (L, idx) in enumerate(zip(poses, keep)):
        inv = np.linalg.inv(L)
        local = (xyz0[idx] @ inv[:3, :3].T + inv[:3, 3]).astype(np.float32)
        _write_scan(seq, f"{k:06d}", local, raw0[idx])
        out[f"08_{k:06d}"] = {"xyz": local, "labels": lab0[idx], "raw": raw0[idx], "world": xyz0[idx], "pose": L}
    # camera-0 poses whose conjugation by Tr gives the scanner poses (semantic-kitti-api's convention)
    cam = [KITTI_TR @ L @ np.linalg.inv(KITTI_TR) for L in poses]
    (seq / "poses.txt").write_text("".join(" ".join(f"{v:.12e}" for v in P[:3].reshape(-1)) + "\n" for P in cam))
    calib = [f"{k}: " + " ".join(f"{v:.12e}" for v in vals) for k, vals in KITTI_P.items()]
    calib.append("Tr: " + " ".join(f"{v:.12e}" for v in KITTI_TR[:3].reshape(-1)))
    (seq / "calib.txt").write_text("\n".join(calib) + "\n")
    for k in range(3):   # train: the real consecutive scans of sequence 01 (no instances, no poses)
        xyz = np.load(sk / f"points_{k:06d}.npy").astype(np.float32)
        lab = np.load(sk / f"labels_{k:06d}.npy").reshape(-1).astype(np.int64)
        raw = raw_kitti_labels(lab, np.zeros(len(lab), np.int64))
        _write_scan(root / "sequences" / "00", f"{k:06d}", xyz, raw)
        out[f"00_{k:06d}"] = {"xyz": xyz, "labels": lab, "raw": raw}
    xyz = np.load(sk / "points_000000.npy").astype(np.float32)
    _write_scan(root / "sequences" / "11", "000000", xyz, None)
    out["11_000000"] = {"xyz": xyz, "labels": np.full(len(xyz), -1), "raw": None}
    return out
