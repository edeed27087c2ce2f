"""Matterport3D in the layout it ships in (``v1/scans/<house>/`` under the root, or ``scans/``),
with each house's zips unpacked where they lie.

A scene is one region of a house, named ``<house>_region<N>``: the mesh
``region_segmentations/<house>/region_segmentations/region<N>.ply`` (also read flattened,
``region_segmentations/region<N>.ply``, as OpenScene's scripts expect it), whose faces carry
``category_id`` (the ``index`` of a row of ``metadata/category_mapping.tsv``; -1 = none),
``segment_id`` and ``material_id``; beside it ``region<N>.fsegs.json`` (a segment per face) and
``region<N>.semseg.json`` (objects as groups of segments). Splits are the official house lists
``scenes_{train,val,test}.txt`` at the root (or under ``v1/`` or ``splits/``); a split's scenes
are all regions of its houses, region numbers ascending.

Ground truth as OpenScene's preprocess_3d_matterport.py makes it: a face's class from its tsv
row -- ``matterport21`` by the row's ``nyu40id`` (the label set's raw ids), ``matterport160`` by
its ``nyuClass`` name (the label set's names are OpenScene's 160 nyuClass spellings) -- and each
vertex takes the class most of its faces have, faces of unannotated or unlisted classes
counting as votes for "none", ties going to "none" and then to the lower id; a vertex in no face
is unannotated. Instances (where semseg.json is there) vote the same way over objects
(``objectId`` + 1, 0 = none), face segments from fsegs.json, else the PLY's ``segment_id``.

Frames are optional: where ``undistorted_camera_parameters/<house>.conf`` and the undistorted
colour/depth images are unpacked, the frames whose camera centre lies in the region's bounding
box grown by 1 m are attached, lazily. The .conf gives ``intrinsics_matrix fx 0 cx 0 fy cy 0 0 1``
for the ``scan <depth png> <colour jpg> <16 numbers>`` lines after it: a camera-to-world pose,
row-major, in OpenGL axes (y up, z back), flipped here to OpenCV's; depth PNGs are uint16 in
0.25 mm (4000 per metre). Without them the scene has no frames and gets rendered views.
"""
from __future__ import annotations

import csv
import os
import re
import warnings

import numpy as np

from ..data import Camera, FrameSequence, Mesh, PointCloud, RGBDFrame
from ..errors import InputError
from ..io._common import make_cloud
from ..io.ply import parse_ply
from ..io.rgbd import _GL_TO_CV, _image_size, _load_json, check_aspect, check_pose, load_color, load_depth
from ..labels import remap_labels
from .base import Dataset, GTScene, register_dataset, split_file

TSV = os.path.join("metadata", "category_mapping.tsv")
DEPTH_SCALE = 4000.0     # undistorted depth: 0.25 mm units
FRAME_MARGIN = 1.0       # metres around a region's box in which a camera centre counts
_REGION = re.compile(r"region(\d+)\.ply")
_SCENE = re.compile(r"(.+)_region(\d+)")


@register_dataset("matterport")
class Matterport(Dataset):
    dataset_name = "matterport"
    labelsets = ("matterport21", "matterport160")
    splits = ("train", "val", "test")
    has_frames = True
    benchmark_format = None

    def __init__(self, root, **kw):
        super().__init__(root, **kw)
        cands = [os.path.join(self.root, "v1", "scans"), os.path.join(self.root, "scans")]
        self.scans_dir = next((c for c in cands if os.path.isdir(c)), cands[0])
        self._face_map: np.ndarray | None = None
        self._conf: dict[str, tuple] = {}

    # --- scenes -----------------------------------------------------------------------------

    def scenes(self, split: str) -> list[str]:
        self.check_split(split)
        listed = None
        for folder in (self.root, os.path.join(self.root, "v1"), os.path.join(self.root, "splits")):
            p = os.path.join(folder, f"scenes_{split}.txt")
            if os.path.isfile(p):
                listed = p
                break
        if listed is None:
            raise InputError(self.root, f"no scenes_{split}.txt (the official house list of the {split} split)")
        out, missing = [], []
        for house in split_file(listed):
            regions = self.regions(house)
            if not regions:
                missing.append(house)
            out += [f"{house}_region{r}" for r in regions]
        if missing:
            if not out:
                raise InputError(self.scans_dir, f"no region_segmentations of any house listed in {os.path.basename(listed)}")
            warnings.warn(f"{self.scans_dir}: {len(missing)} houses of {os.path.basename(listed)} have no "
                          f"region_segmentations (e.g. {missing[0]}); using the {len(out)} regions found")
        return out

    def _region_dirs(self, house: str) -> list[str]:
        base = os.path.join(self.scans_dir, house, "region_segmentations")
        return [os.path.join(base, house, "region_segmentations"), base]

    def regions(self, house: str) -> list[int]:
        """Region numbers of a house, ascending (the unzipped and the flattened layout)."""
        for d in self._region_dirs(house):
            if os.path.isdir(d):
                found = sorted(int(m.group(1)) for f in os.listdir(d) if (m := _REGION.fullmatch(f)))
                if found:
                    return found
        return []

    def region_path(self, name: str) -> str:
        m = _SCENE.fullmatch(name)
        if m:
            for d in self._region_dirs(m.group(1)):
                p = os.path.join(d, f"region{int(m.group(2))}.ply")
                if os.path.isfile(p):
                    return p
        raise InputError(self.scans_dir, f"scene {name!r} is not <house>_region<N> with a "
                                         f"<house>/region_segmentations/.../region<N>.ply")

    # --- one scene --------------------------------------------------------------------------

    def load(self, name: str) -> GTScene:
        ply = self.region_path(name)
        mesh, face = read_region(ply)
        n = len(mesh.vertices)
        cat = face_property(ply, face, "category_id")
        table = self.face_classes()
        bad = (cat < -1) | (cat >= len(table))
        if bad.any():
            raise InputError(ply, f"face category_id {int(cat[bad][0])} is not a row index of {TSV}")
        labels = vertex_vote(mesh.faces, table[np.maximum(cat, 0)], n)
        instances = self._instances(ply, mesh, face)
        cloud = PointCloud(mesh.vertices, mesh.vertex_rgb, origin=mesh.origin, source=ply)
        frames, conf = self._frames(name, mesh)
        meta = {"house": _SCENE.fullmatch(name).group(1), "region": int(_SCENE.fullmatch(name).group(2)),
                "mesh": ply, "frames_source": conf, "n_frames": len(frames) if frames is not None else 0,
                "frame_skip": self.frame_skip}
        return GTScene(name, cloud, labels, self.labelset, instances=instances, frames=frames, mesh=mesh,
                       source=os.path.dirname(ply), meta=meta)

    def face_classes(self) -> np.ndarray:
        """Label id per category_id (position 0 = category_id 0 and -1 = none): the tsv's
        nyu40id through matterport21's raw ids, or its nyuClass name among matterport160's."""
        if self._face_map is None:
            rows = read_category_mapping(self._tsv_path())
            size = max([i for i, _ in rows] + [0]) + 1
            out = np.full(size, -1, np.int64)
            if self.labelset.raw_map is not None:   # matterport21: NYU40 ids
                nyu = np.zeros(size, np.int64)
                for i, r in rows:
                    nyu[i] = r["nyu40id"]
                out = remap_labels(nyu, self.labelset).astype(np.int64)
                out[0] = -1
            else:                                   # matterport160: nyuClass names, as OpenScene spells them
                ids = {n: k for k, n in enumerate(self.labelset.class_names) if k not in self.labelset.ignore_ids}
                for i, r in rows:
                    out[i] = ids.get(r["nyuClass"], -1)
            self._face_map = out
        return self._face_map

    def _tsv_path(self) -> str:
        cands = [os.path.join(self.root, TSV), os.path.join(self.root, "v1", TSV),
                 os.path.join(self.root, "category_mapping.tsv")]
        p = next((c for c in cands if os.path.isfile(c)), None)
        if p is None:
            raise InputError(cands[0], "not found: face category_id values index this file's rows")
        return p

    def _instances(self, ply: str, mesh: Mesh, face) -> np.ndarray | None:
        base = ply[:-4]
        sem = base + ".semseg.json"
        if not os.path.exists(sem):
            return None
        fsegs = base + ".fsegs.json"
        if os.path.exists(fsegs):
            seg = _load_json(fsegs).get("segIndices")
            try:
                seg = np.asarray(seg, np.int64).reshape(-1) if isinstance(seg, list) else None
            except (TypeError, ValueError, OverflowError):
                seg = None
            if seg is None:
                raise InputError(fsegs, "needs a 'segIndices' list of one integer segment id per face")
            if len(seg) != len(mesh.faces):
                raise InputError(fsegs, f"'segIndices' has {len(seg)} entries, {os.path.basename(ply)} has "
                                        f"{len(mesh.faces)} faces")
        else:
            seg = face_property(ply, face, "segment_id")
        groups = _load_json(sem).get("segGroups")
        if not isinstance(groups, list):
            raise InputError(sem, "has no 'segGroups' list")
        useg, inverse = np.unique(seg, return_inverse=True)
        owner = np.zeros(len(useg), np.int64)
        for k, g in enumerate(groups):
            oid = g.get("objectId", g.get("id")) if isinstance(g, dict) else None
            try:
                ids = np.asarray(g["segments"], np.int64).reshape(-1)
            except (TypeError, ValueError, KeyError, OverflowError):
                ids = None
            if ids is None or not isinstance(oid, int) or isinstance(oid, bool) or oid < 0:
                raise InputError(sem, f"segGroups[{k}] needs a non-negative integer 'objectId' and a list of "
                                      f"integer 'segments'")
            pos = np.searchsorted(useg, ids)
            hit = pos < len(useg)
            hit[hit] = useg[pos[hit]] == ids[hit]
            owner[pos[hit]] = oid + 1   # segments no face has are dropped, as the meshes are cut per region
        return vertex_vote(mesh.faces, owner[inverse] - 1, len(mesh.vertices)) + 1

    # --- frames -----------------------------------------------------------------------------

    def _house_file(self, house: str, folder: str, name: str) -> str | None:
        base = os.path.join(self.scans_dir, house, folder)
        for d in (os.path.join(base, house, folder), base):
            p = os.path.join(d, name)
            if os.path.exists(p):
                return p
        return None

    def _frames(self, name: str, mesh: Mesh) -> tuple[FrameSequence | None, str | None]:
        house = _SCENE.fullmatch(name).group(1)
        conf = self._house_file(house, "undistorted_camera_parameters", f"{house}.conf")
        if conf is None:
            return None, None
        if conf not in self._conf:
            self._conf[conf] = read_conf(conf)
        Ks, poses, depth_names, color_names = self._conf[conf]
        lo, hi = mesh.vertices.min(0) + mesh.origin, mesh.vertices.max(0) + mesh.origin
        c = poses[:, :3, 3]
        inside = np.flatnonzero(((c >= lo - FRAME_MARGIN) & (c <= hi + FRAME_MARGIN)).all(1))
        keep = inside[::self.frame_skip]
        if not len(keep):
            return None, conf
        color = [self._house_file(house, "undistorted_color_images", color_names[i]) for i in keep]
        depth = [self._house_file(house, "undistorted_depth_images", depth_names[i]) for i in keep]
        if all(p is None for p in color) and all(p is None for p in depth):
            return None, conf    # camera parameters unpacked without the images
        for j, i in enumerate(keep):
            if color[j] is None or depth[j] is None:
                what = (color_names if color[j] is None else depth_names)[i]
                raise InputError(conf, f"lists {what}, which is not in undistorted_color_images/ or "
                                       f"undistorted_depth_images/")
        w, h = _image_size(color[0])
        check_aspect(depth[0], (w, h), _image_size(depth[0]))
        shift = mesh.origin
        cams = []
        for i in keep:
            pose = poses[i].copy()
            pose[:3, 3] -= shift
            cams.append(Camera(Ks[i], pose, w, h))
        names = [os.path.splitext(color_names[i])[0] for i in keep]

        def load(j: int) -> RGBDFrame:
            cam = cams[j]
            rgb = load_color(color[j])
            if (rgb.shape[1], rgb.shape[0]) != (cam.width, cam.height):
                raise InputError(color[j], f"colour image is {rgb.shape[1]}x{rgb.shape[0]}, the first frame's is "
                                           f"{cam.width}x{cam.height}")
            d = load_depth(depth[j], DEPTH_SCALE)
            check_aspect(depth[j], (cam.width, cam.height), (d.shape[1], d.shape[0]))
            return RGBDFrame(cam, rgb, d, names[j])

        seq = FrameSequence(cams, names, load, source=conf, depth_scale=DEPTH_SCALE)
        return seq, conf


# --- files ------------------------------------------------------------------------------------

def read_region(path: str):
    """(Mesh, face element) of a region PLY; the face element keeps its per-face properties."""
    els = parse_ply(path)["elements"]
    v, face = els.get("vertex"), els.get("face")
    vnames = list(v.dtype.names) if isinstance(v, np.ndarray) else list(v or ())
    if not {"x", "y", "z"} <= set(vnames):
        raise InputError(path, "PLY has no vertex element with x, y, z")
    fnames = list(face.dtype.names) if isinstance(face, np.ndarray) else list(face or ())
    if "vertex_indices" not in fnames:
        raise InputError(path, "PLY has no face element with vertex_indices (a region is a mesh)")
    xyz = np.stack([np.asarray(v[a]) for a in "xyz"], 1)
    rgb = np.stack([np.asarray(v[a]) for a in ("red", "green", "blue")], 1) if \
        {"red", "green", "blue"} <= set(vnames) else None
    lists = face["vertex_indices"]
    try:
        faces = np.asarray(list(lists) if isinstance(lists, list) else lists, np.int64).reshape(-1, 3)
    except ValueError:
        faces = None
    if faces is None or len(faces) != len(lists):
        raise InputError(path, "PLY faces must be triangles (3 vertex indices each)")
    cloud = make_cloud(path, xyz, rgb=rgb)
    if len(faces) and (faces.min() < 0 or faces.max() >= len(cloud)):
        raise InputError(path, f"PLY face indices out of range (0..{len(cloud) - 1})")
    return Mesh(cloud.xyz, faces, cloud.rgb, origin=cloud.origin, source=path), face


def face_property(path: str, face, prop: str) -> np.ndarray:
    names = list(face.dtype.names) if isinstance(face, np.ndarray) else list(face)
    if prop not in names:
        raise InputError(path, f"PLY faces have no {prop!r} property (Matterport region meshes carry "
                               f"category_id, segment_id, material_id)")
    a = np.asarray(face[prop])
    if a.dtype.kind not in "iu":
        raise InputError(path, f"PLY face property {prop!r} must be integer, got {a.dtype}")
    return a.astype(np.int64).reshape(-1)


def vertex_vote(faces: np.ndarray, face_label: np.ndarray, n: int) -> np.ndarray:
    """Per vertex the label most of its faces carry (-1 votes count, and win ties; then the
    lower label); -1 for a vertex in no face. Vectorised: one sort of (vertex, label) pairs."""
    out = np.full(n, -1, np.int64)
    if not len(faces):
        return out
    lab = np.repeat(np.asarray(face_label, np.int64) + 1, 3)        # 0 = none
    vert = faces.reshape(-1)
    width = int(lab.max()) + 1
    keys, counts = np.unique(vert * width + lab, return_counts=True)
    v, c = keys // width, keys % width
    order = np.lexsort((c, -counts, v))                              # per vertex: most votes, then lowest label
    v, c = v[order], c[order]
    first = np.ones(len(v), bool)
    first[1:] = v[1:] != v[:-1]
    out[v[first]] = c[first] - 1
    return out


def read_category_mapping(path: str) -> list[tuple[int, dict]]:
    """(category index, {'nyu40id': int, 'nyuClass': str}) per row of category_mapping.tsv; the
    index column where the file has one, else the row number (1-based, as category_id counts)."""
    out = []
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = csv.reader(f, delimiter="\t")
            head = [h.strip() for h in next(rows, [])]
            missing = [c for c in ("nyu40id", "nyuClass") if c not in head]
            if missing:
                raise InputError(path, f"header lacks the {' and '.join(repr(c) for c in missing)} column")
            ci = head.index("index") if "index" in head else None
            cn, cc = head.index("nyu40id"), head.index("nyuClass")
            for line, row in enumerate(rows, 2):
                if not any(x.strip() for x in row):
                    continue
                try:
                    idx = int(row[ci]) if ci is not None else len(out) + 1
                    nyu = int(float(row[cn])) if cn < len(row) and row[cn].strip() else 0
                    name = row[cc].strip() if cc < len(row) else ""
                except (IndexError, ValueError):
                    raise InputError(path, f"line {line} has no integer 'index' and 'nyu40id'") from None
                if idx < 1:
                    raise InputError(path, f"line {line} has index {idx}; category indices start at 1")
                out.append((idx, {"nyu40id": nyu, "nyuClass": name}))
    except UnicodeDecodeError:
        raise InputError(path, "not UTF-8 text") from None
    if not out:
        raise InputError(path, "holds no category rows")
    return out


def read_conf(path: str) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """(K (F, 3, 3), OpenCV camera-to-world (F, 4, 4), depth names, colour names) of an
    undistorted_camera_parameters .conf; each scan line takes the last intrinsics_matrix."""
    Ks, poses, depth, color = [], [], [], []
    K = None
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read as text ({type(exc).__name__})") from None
    for k, ln in enumerate(lines, 1):
        tok = ln.split()
        if not tok:
            continue
        if tok[0] == "intrinsics_matrix":
            try:
                K = np.array(tok[1:], np.float64).reshape(3, 3)
            except ValueError:
                raise InputError(path, f"line {k}: intrinsics_matrix needs 9 numbers") from None
            if not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
                raise InputError(path, f"line {k}: invalid intrinsics (fx={K[0, 0]:g}, fy={K[1, 1]:g})")
        elif tok[0] == "scan":
            if K is None:
                raise InputError(path, f"line {k}: a scan line before any intrinsics_matrix")
            try:
                pose = np.array(tok[3:], np.float64).reshape(4, 4) if len(tok) == 19 else None
            except ValueError:
                pose = None
            if pose is None:
                raise InputError(path, f"line {k}: a scan line is 'scan <depth png> <colour jpg> <16 numbers>'")
            try:
                check_pose(path, pose)
            except InputError as exc:
                raise InputError(path, f"line {k}: {exc.problem}") from None
            Ks.append(K)
            poses.append(pose @ _GL_TO_CV)
            depth.append(tok[1])
            color.append(tok[2])
    if not poses:
        raise InputError(path, "holds no scan line")
    return np.stack(Ks), np.stack(poses), depth, color
