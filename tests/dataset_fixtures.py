"""Tiny copies of benchmark datasets in their official layouts, made from the real shared data.

``write_scannet`` builds a ScanNet v2 root (scans/<scene>/ with .sens, vh_clean_2 PLYs, segs,
aggregation; the label tsv and split lists at the root) from the real labelled ScanNet scene in
``../shared/data/scannet-scene0000-labelled``; ``write_sens`` writes ScanNet's binary .sens from
any frames, following SensReader's layout field by field.
"""
from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

LABELLED = "scannet-scene0000-labelled"
SCENES = ("scene0000_00", "scene0000_01", "scene0000_02")

# ScanNet's calibration: colour 1170.2 px at 1296x968 scaled to 640x480, depth 571.6 px at
# 640x480 scaled to 320x240; they differ by ~1 %, so readers must resample depth as for real data.
K_COLOR = np.array([[577.9, 0.0, 319.8], [0.0, 577.9, 239.7], [0.0, 0.0, 1.0]])
K_DEPTH = np.array([[285.8, 0.0, 159.5], [0.0, 285.8, 119.5], [0.0, 0.0, 1.0]])
COLOR_WH = (640, 480)
DEPTH_WH = (320, 240)
MIN_FILLED = 0.05     # a planned frame has valid depth in at least 5 % of its pixels (near planes cut the rest)
SENSOR_SPLAT = 0.5   # frames splat each vertex at half the viewer's disc: a depth sensor's surface, not a
                     # hole-free rendering, so thin layers (a poster on a wall) stay separate
TARGETED = 0.3       # share of a plan's frames that walk up to what the wide views missed
SEGMENT_VOXEL = 0.4   # metres: segments = instance x this grid, a real over-segmentation

# the three scenes: (rotation about z in degrees, translation, fraction of points kept)
VARIANTS = {
    "scene0000_00": (0.0, (0.0, 0.0, 0.0), 1.0),
    "scene0000_01": (30.0, (1.5, -0.75, 0.0), 1.0),
    "scene0000_02": (-100.0, (-2.0, 3.0, 0.1), 0.6),
}

NYU40_NAMES = {1: "wall", 2: "floor", 3: "cabinet", 4: "bed", 5: "chair", 6: "sofa", 7: "table", 8: "door",
               9: "window", 10: "bookshelf", 11: "picture", 12: "counter", 14: "desk", 15: "shelves",
               16: "curtain", 18: "pillow", 19: "mirror", 22: "ceiling", 24: "refridgerator",
               25: "television", 32: "night stand", 33: "toilet", 34: "sink", 36: "bathtub",
               38: "otherstructure", 39: "otherfurniture", 40: "otherprop"}
# raw categories per NYU40 id, cycled over a class's instances; "dollhouse" is not a ScanNet-200 class
RAW_CATEGORIES = {1: ["wall"], 2: ["floor"], 3: ["cabinet", "kitchen cabinet"], 4: ["bed"], 5: ["chair"],
                  6: ["couch"], 7: ["table", "coffee table", "end table"], 8: ["door"], 9: ["window"],
                  10: ["bookshelf"], 11: ["picture"], 12: ["counter", "kitchen counter"], 14: ["desk"],
                  15: ["shelf"], 16: ["curtain"], 18: ["pillow"], 19: ["mirror"], 22: ["ceiling"],
                  24: ["refrigerator"], 25: ["tv"], 32: ["nightstand"], 33: ["toilet"], 34: ["sink"],
                  36: ["bathtub"], 38: ["column", "pipe"], 39: ["furniture", "stand"],
                  40: ["lamp", "box", "dollhouse", "book", "object"]}
TSV_HEADER = ["id", "raw_category", "category", "count", "nyu40id", "eigen13id", "nyuClass", "nyu40class",
              "eigen13class", "ModelNet40", "ModelNet10", "ShapeNetCore55", "synsetoffset", "wnsynsetid",
              "wnsynsetkey", "mpcat40", "mpcat40index"]


# --- the real scene and its variants --------------------------------------------------------------

def load_labelled(shared: str | os.PathLike) -> dict[str, np.ndarray]:
    """The real scene: ``xyz`` (N, 3) float32, ``rgb`` (N, 3) uint8, ``sem`` NYU40 ids, ``ins`` ids."""
    d = Path(shared) / LABELLED
    v = np.load(d / "scene0000_00_vert.npy")
    return {"xyz": np.ascontiguousarray(v[:, :3], np.float32), "rgb": np.clip(v[:, 3:6], 0, 255).astype(np.uint8),
            "sem": np.load(d / "scene0000_00_sem_label.npy").astype(np.int64),
            "ins": np.load(d / "scene0000_00_ins_label.npy").astype(np.int64)}


def variant(name: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(4x4 rigid transform, indices of the real points kept, in order) of a fixture scene."""
    deg, t, keep = VARIANTS[name]
    a = np.radians(deg)
    T = np.eye(4)
    T[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    T[:3, 3] = t
    if keep >= 1.0:
        return T, np.arange(n)
    rng = np.random.default_rng(sum(map(ord, name)))
    return T, np.flatnonzero(rng.random(n) < keep)


def instance_category(instance: int, nyu40: int) -> str:
    """The raw category the fixture gives an object (several per NYU40 class, by instance id)."""
    names = RAW_CATEGORIES[int(nyu40)]
    return names[int(instance) % len(names)]


# --- file writers ---------------------------------------------------------------------------------

def write_ply(path, xyz, rgb, *, label=None, faces=None) -> None:
    """Binary PLY as ScanNet ships it: x y z float, red green blue alpha uchar (+ ushort label)."""
    n = len(xyz)
    cols = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1"), ("alpha", "u1")]
    if label is not None:
        cols.append(("label", "<u2"))
    v = np.empty(n, cols)
    v["x"], v["y"], v["z"] = np.asarray(xyz, np.float32).T
    v["red"], v["green"], v["blue"] = np.asarray(rgb, np.uint8).T
    v["alpha"] = 255
    if label is not None:
        v["label"] = label
    ply_t = {"<f4": "float", "u1": "uchar", "<u2": "ushort"}
    head = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    head += [f"property {ply_t[t]} {c}" for c, t in cols]
    body = [v.tobytes()]
    if faces is not None:
        faces = np.asarray(faces, np.int64).reshape(-1, 3)
        head += [f"element face {len(faces)}", "property list uchar int vertex_indices"]
        f = np.empty(len(faces), [("k", "u1"), ("v", "<i4", (3,))])
        f["k"], f["v"] = 3, faces
        body.append(f.tobytes())
    head.append("end_header")
    Path(path).write_bytes(("\n".join(head) + "\n").encode() + b"".join(body))


def _mat44(K: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = K
    return m


def write_sens(path, frames: Iterable[tuple], *, depth_shift: float = 1000.0, color_codec: int = 2,
               depth_codec: int = 1, sensor: str = "StructureSensor", quality: int = 92) -> int:
    """ScanNet .sens (version 4) from (K_color, K_depth, colour HxWx3 uint8, depth hxw uint16,
    camera-to-world 4x4) tuples; codecs 2 jpeg / 1 png / 0 raw and 1 zlib / 0 raw. Frames are
    streamed (the count is patched in at the end); returns the number written."""
    from PIL import Image
    with open(path, "wb") as f:
        count_at = None
        n = 0
        for K_c, K_d, color, depth, pose in frames:
            color = np.ascontiguousarray(color, np.uint8)
            depth = np.ascontiguousarray(depth, "<u2")
            if count_at is None:
                f.write(struct.pack("<IQ", 4, len(sensor)) + sensor.encode())
                for m in (_mat44(K_c), np.eye(4), _mat44(K_d), np.eye(4)):
                    f.write(np.asarray(m, "<f4").tobytes())
                f.write(struct.pack("<ii4If", color_codec, depth_codec, color.shape[1], color.shape[0],
                                    depth.shape[1], depth.shape[0], depth_shift))
                count_at = f.tell()
                f.write(struct.pack("<Q", 0))
                first = (np.asarray(K_c, np.float32), np.asarray(K_d, np.float32))
            elif not (np.allclose(K_c, first[0]) and np.allclose(K_d, first[1])):
                raise ValueError("a .sens has one calibration: every frame must share K_color and K_depth")
            if color_codec == 0:
                cdata = color.tobytes()
            else:
                b = io.BytesIO()
                Image.fromarray(color).save(b, "JPEG" if color_codec == 2 else "PNG", quality=quality)
                cdata = b.getvalue()
            ddata = zlib.compress(depth.tobytes(), 1) if depth_codec == 1 else depth.tobytes()
            f.write(np.asarray(pose, "<f4").reshape(16).tobytes())
            f.write(struct.pack("<4Q", 33_333 * n, 33_333 * n + 1000, len(cdata), len(ddata)))
            f.write(cdata + ddata)
            n += 1
        if count_at is None:
            raise ValueError("write_sens needs at least one frame")
        f.seek(count_at)
        f.write(struct.pack("<Q", n))
    return n


def export_frames(folder, frames: Sequence[tuple]) -> None:
    """SensReader's export layout (color/N.jpg, depth/N.png, pose/N.txt, intrinsic/*.txt)."""
    from PIL import Image
    folder = Path(folder)
    for sub in ("color", "depth", "pose", "intrinsic"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    K_c, K_d = frames[0][0], frames[0][1]
    for fname, m in (("intrinsic_color", _mat44(K_c)), ("extrinsic_color", np.eye(4)),
                     ("intrinsic_depth", _mat44(K_d)), ("extrinsic_depth", np.eye(4))):
        np.savetxt(folder / "intrinsic" / f"{fname}.txt", m, fmt="%f")
    for i, (_, _, color, depth, pose) in enumerate(frames):
        Image.fromarray(np.asarray(color, np.uint8)).save(folder / "color" / f"{i}.jpg", quality=92)
        Image.fromarray(np.asarray(depth, np.uint16)).save(folder / "depth" / f"{i}.png")
        np.savetxt(folder / "pose" / f"{i}.txt", pose, fmt="%f")


# --- cameras and rendered frames ------------------------------------------------------------------

def plan_frames(xyz: np.ndarray, n_frames: int) -> list[tuple[np.ndarray, float]]:
    """(camera-to-world, near plane) of ``n_frames`` cameras inside the room, chosen greedily
    (each adds the most points not seen yet) from eyes by the walls and corners looking across the
    room, and from the middle looking at the walls' feet, each with near planes that cut away
    part of what is in front (as the package's planner does for hidden surfaces). Depth-tested
    at the depth camera's resolution with the frames stage's tolerance (5 cm / 5 %)."""
    from pc_ovseg import native
    from pc_ovseg.data import Camera, PointCloud
    from pc_ovseg.views.cameras import look_at
    from pc_ovseg.views.render import splat_radius
    radius = SENSOR_SPLAT * splat_radius(PointCloud(xyz))
    lo, hi = np.percentile(xyz, 1, axis=0), np.percentile(xyz, 99, axis=0)
    ext = hi - lo
    at = lambda f: lo + np.asarray(f) * ext  # noqa: E731
    cands: list[tuple[np.ndarray, float]] = []

    floor = xyz[xyz[:, 2] < lo[2] + 0.15, :2]

    def add(eye, target, fractions):
        if np.min(np.linalg.norm(floor - eye[:2], axis=1)) > 0.25:
            return  # no floor under the eye: outside the (not rectangular) room
        length = float(np.linalg.norm(target - eye))
        cands.extend((look_at(eye, target), max(0.1, q * length)) for q in fractions)

    edge = [(0.05, 0.5), (0.95, 0.5), (0.5, 0.05), (0.5, 0.95), (0.05, 0.05), (0.95, 0.95), (0.05, 0.95), (0.95, 0.05)]
    for fx, fy in edge:
        for hz, tzs in ((0.45, (0.1, 0.5, 0.9)), (0.9, (0.0, 0.3))):
            for tz in tzs:
                add(at([fx, fy, hz]), np.array([*at([1 - fx, 1 - fy, 0])[:2], lo[2] + tz * ext[2]]), (0, .2, .4, .6, .8))
        add(at([fx, fy, 0.25]), at([1 - fx, 1 - fy, 0.1]), (0, .3, .55, .8))
        add(at([0.5, 0.5, 0.3]), at([fx, fy, 0.1]), (0, .5, .85))
    cam = lambda pose: Camera(K_DEPTH, pose, *DEPTH_WH)  # noqa: E731
    vis, kept = [], []
    for pose, near in cands:
        depth, _ = native.splat(xyz, cam(pose), radius=radius, near=near, max_pixel_radius=16.0)
        if (depth > 0).mean() < MIN_FILLED:
            continue  # mostly empty (looking out of the room past the near plane): not a sensor frame
        kept.append((pose, near))
        vis.append(native.depth_test(xyz, cam(pose), depth, rel_tol=0.05, abs_tol=0.05, border=5, near=near)[0])
    seen = np.zeros(len(xyz), bool)
    chosen = []
    n_wide = n_frames - int(round(TARGETED * n_frames))
    for _ in range(min(n_wide, len(kept))):
        k = int(np.argmax([(~seen[v]).sum() for v in vis]))
        chosen.append(k)
        seen[vis[k]] = True
        vis[k] = vis[k][:0]
    plan = [kept[k] for k in chosen]
    # what no wide view sees (under tables, behind furniture): a close camera on the largest patch
    # of unseen points, from the room's middle height, its near plane just short of the patch (a
    # scanning operator walking up to it; the near plane stands in for moving the occluder)
    centre = np.array([*(lo[:2] + hi[:2]) / 2, lo[2] + 0.5 * ext[2]])
    tried: set = set()
    while len(plan) < n_frames and not seen.all():
        cell = np.floor(xyz[~seen] / 0.6).astype(np.int64)
        keys, inv, counts = np.unique(cell, axis=0, return_inverse=True, return_counts=True)
        order = [c for c in np.argsort(-counts) if tuple(keys[c]) not in tried]
        if not order or counts[order[0]] < 20:
            break
        tried.add(tuple(keys[order[0]]))
        patch = xyz[~seen][inv.reshape(-1) == order[0]]
        target = patch.mean(axis=0)
        away = centre - target
        away[2] = max(away[2], 0.3 * np.linalg.norm(away[:2]))   # look down on it rather than up
        eye = target + 1.2 * away / max(np.linalg.norm(away), 1e-6)
        pose = look_at(eye, target)
        dist = np.linalg.norm(patch - eye, axis=1)
        near = max(0.1, float(dist.min()) - 0.1)
        depth, _ = native.splat(xyz, cam(pose), radius=radius, near=near, max_pixel_radius=16.0)
        v = native.depth_test(xyz, cam(pose), depth, rel_tol=0.05, abs_tol=0.05, border=5, near=near)[0]
        if (~seen[v]).sum() < 20:
            continue
        plan.append((pose, near))
        seen[v] = True
    return plan


def render_frames(xyz: np.ndarray, rgb: np.ndarray, cameras: Sequence[tuple[np.ndarray, float]]) -> list[tuple]:
    """(K_color, K_depth, colour, depth mm uint16, pose) per camera: z-buffered point splats of
    the cloud (discs of the renderer's kNN radius), white where nothing is seen."""
    from pc_ovseg import native
    from pc_ovseg.data import Camera, PointCloud
    from pc_ovseg.views.render import splat_radius
    radius = SENSOR_SPLAT * splat_radius(PointCloud(xyz))
    out = []
    for pose, near in cameras:
        _, index = native.splat(xyz, Camera(K_COLOR, pose, *COLOR_WH), radius=radius, near=near, max_pixel_radius=16.0)
        color = np.full((*index.shape, 3), 255, np.uint8)
        color[index >= 0] = rgb[index[index >= 0]]
        depth, _ = native.splat(xyz, Camera(K_DEPTH, pose, *DEPTH_WH), radius=radius, near=near, max_pixel_radius=16.0)
        out.append((K_COLOR, K_DEPTH, color, np.clip(np.rint(depth * 1000.0), 0, 65535).astype(np.uint16), pose))
    return out


# --- the dataset ----------------------------------------------------------------------------------

def segments_of(xyz: np.ndarray, ins: np.ndarray) -> np.ndarray:
    """ScanNet-like segment ids (sparse ints): each instance cut by a SEGMENT_VOXEL grid."""
    cells = np.floor(xyz / SEGMENT_VOXEL).astype(np.int64)
    _, inv = np.unique(np.column_stack([ins, cells]), axis=0, return_inverse=True)
    return inv.reshape(-1) * 7 + 11


def tsv_rows() -> list[list[str]]:
    """Rows of scannetv2-labels.combined.tsv for the fixture's raw categories: the id of a
    ScanNet-200 class of the same name, else an id outside ScanNet-200."""
    here = Path(__file__).resolve().parents[1] / "data" / "labelsets" / "scannet200.json"
    ls = json.loads(here.read_text())
    ids = {n: r for n, r in zip(ls["class_names"], ls["raw_ids"])}
    rows, spare = [], 1300
    for nyu, names in sorted(RAW_CATEGORIES.items()):
        for name in names:
            rid = ids.get(name)
            if rid is None:
                rid, spare = spare, spare + 1
            rows.append([str(rid), name, name, "1", str(nyu), "0", NYU40_NAMES[nyu], NYU40_NAMES[nyu], "", "", "",
                         "", "", "", "", NYU40_NAMES[nyu], str(nyu)])
    return rows


def write_scannet(root, shared, scenes: Sequence[str] = SCENES, *, frames: int = 60, sens: bool = True,
                  exported: bool | Sequence[str] = False, splits_dir: str = ".", faces=None) -> Path:
    """A ScanNet v2 root of ``scenes`` made from the real labelled scene0000_00 (81,369 points,
    67 objects): scene0000_00 is it as it is, scene0000_01 the same under a 30 degree turn and a
    shift, scene0000_02 a 60 % random subsample under another turn and shift (VARIANTS, variant()).
    Each gets its vh_clean_2 PLY, labels PLY (NYU40), segments (instance x 0.4 m grid),
    aggregation (one group per object, raw category by instance_category), and with ``sens`` a
    .sens of ``frames`` frames rendered from the labelled cloud (one camera plan for all scenes,
    moved with each scene), 640x480 JPEG colour and 320x240 zlib depth in mm; ``exported`` scenes
    (True = all) also get SensReader's export of those frames in ``<scene>/exported/``.
    val lists every scene, train the first one; ``faces`` (F, 3) makes the PLYs meshes."""
    root = Path(root)
    real = load_labelled(shared)
    n = len(real["xyz"])
    cams = plan_frames(real["xyz"], frames) if frames and (sens or exported) else []
    want_export = set(scenes if exported is True else (exported or ()))
    for name in scenes:
        T, idx = variant(name, n)
        xyz = (real["xyz"][idx].astype(np.float64) @ T[:3, :3].T + T[:3, 3]).astype(np.float32)
        rgb, sem, ins = real["rgb"][idx], real["sem"][idx], real["ins"][idx]
        d = root / "scans" / name
        d.mkdir(parents=True, exist_ok=True)
        write_ply(d / f"{name}_vh_clean_2.ply", xyz, rgb, faces=faces)
        write_ply(d / f"{name}_vh_clean_2.labels.ply", xyz, rgb, label=sem, faces=faces)
        seg = segments_of(real["xyz"][idx], ins)
        (d / f"{name}_vh_clean_2.0.010000.segs.json").write_text(json.dumps(
            {"params": {"kThresh": "0.01", "segMinVerts": "20", "minPoints": "750", "maxPoints": "5000"},
             "sceneId": name, "segIndices": seg.tolist()}))
        groups = []
        for k in np.unique(ins[ins > 0]):
            m = ins == k
            groups.append({"id": int(k) - 1, "objectId": int(k) - 1, "segments": np.unique(seg[m]).tolist(),
                           "label": instance_category(int(k), int(sem[m][0]))})
        (d / f"{name}.aggregation.json").write_text(json.dumps(
            {"sceneId": f"scannet.{name}", "appId": "Annotator.v1.0", "segGroups": groups,
             "segmentsFile": f"scannet.{name}_vh_clean_2.0.010000.segs.json"}))
        if cams:
            moved = [(T @ pose, near) for pose, near in cams]
            rendered = render_frames(xyz, rgb, moved)
            if sens:
                write_sens(d / f"{name}.sens", rendered)
            if name in want_export:
                export_frames(d / "exported", rendered)
    with open(root / "scannetv2-labels.combined.tsv", "w", encoding="utf-8") as f:
        f.write("\t".join(TSV_HEADER) + "\n")
        f.writelines("\t".join(r) + "\n" for r in tsv_rows())
    sd = root / splits_dir
    sd.mkdir(parents=True, exist_ok=True)
    (sd / "scannetv2_val.txt").write_text("".join(f"{s}\n" for s in scenes))
    (sd / "scannetv2_train.txt").write_text(f"{scenes[0]}\n")
    return root
