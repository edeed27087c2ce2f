"""S3DIS (Stanford Large-Scale 3D Indoor Spaces) in the layout it ships in:
``Stanford3dDataset_v1.2_Aligned_Version/Area_N/<room>/Annotations/<class>_<k>.txt``.

The root is the folder holding ``Area_1`` .. ``Area_6`` (or its parent). Each annotation file is
one object: a line per point, ``x y z r g b`` separated by spaces. A scene is one room, named
``Area_N_<room>``; its points are its annotation files concatenated in name order (classes
alphabetically, ``k`` numerically), as PointNet's ``collect_point_label`` builds a room; the
room's own ``<room>.txt`` (the same points, unlabelled) is not read.

Ground truth as the reference code makes it: the class is the file name's prefix, mapped to the
13 classes of ``s3dis13``; ``stairs`` (a handful of objects, in Area_2 and Area_4 only) counts
as ``clutter``, as in PointNet's indoor3d_util and the codebases that followed it. Instances are
the annotation files (1..K in that order). Splits follow the standard fold: ``val`` = Area_5,
``train`` = the other areas, ``all`` = every area. macOS ``._`` files and dot files are skipped.
v1.2 has one known defect, a stray byte at line 180389 of
``Area_5/hallway_6/Annotations/ceiling_1.txt``: the reader names that file and line and stops;
fix the line (the usual practice) and rerun.
"""
from __future__ import annotations

import os
import re
import warnings

import numpy as np

from ..errors import InputError
from ..io._common import check_file, make_cloud, read_bytes
from .base import Dataset, GTScene, register_dataset

CLASSES = ("ceiling", "floor", "wall", "beam", "column", "window", "door", "table", "chair", "sofa",
           "bookcase", "board", "clutter")
ALIASES = {"stairs": "clutter"}
VAL_AREA = 5
AREAS = tuple(range(1, 7))
RELEASE = "Stanford3dDataset_v1.2_Aligned_Version"
_WS = np.frombuffer(b" \t\r\n\x0b\x0c", np.uint8)
_SCENE = re.compile(r"(Area_\d+)_(.+)")


def natural_key(name: str) -> list:
    """Sort key that orders embedded numbers by value (office_2 before office_10)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _hidden(name: str) -> bool:
    return name.startswith(".")  # ._foo (macOS resource forks), .DS_Store


@register_dataset("s3dis")
class S3DIS(Dataset):
    dataset_name = "s3dis"
    labelsets = ("s3dis13",)
    splits = ("train", "val", "all")
    has_frames = False
    benchmark_format = None

    def __init__(self, root, **kw):
        super().__init__(root, **kw)
        nested = os.path.join(self.root, RELEASE)
        self.base = nested if not self._areas(self.root) and os.path.isdir(nested) else self.root
        ids = {n: self.labelset.id_of(n) for n in CLASSES}
        self._class_ids = {**ids, **{a: ids[c] for a, c in ALIASES.items()}}

    @staticmethod
    def _areas(folder: str) -> list[str]:
        return sorted((e.name for e in os.scandir(folder) if e.is_dir() and re.fullmatch(r"Area_\d+", e.name)),
                      key=natural_key)

    # --- scenes -----------------------------------------------------------------------------

    def scenes(self, split: str) -> list[str]:
        self.check_split(split)
        want = {"val": {VAL_AREA}, "train": set(AREAS) - {VAL_AREA}, "all": set(AREAS)}[split]
        out = []
        for area in self._areas(self.base):
            if int(area[5:]) not in want:
                continue
            d = os.path.join(self.base, area)
            rooms = [e.name for e in os.scandir(d) if e.is_dir() and not _hidden(e.name)
                     and os.path.isdir(os.path.join(e.path, "Annotations"))]
            out += [f"{area}_{r}" for r in sorted(rooms, key=natural_key)]
        if not out:
            areas = ", ".join(f"Area_{a}" for a in sorted(want))
            raise InputError(self.base, f"no room with an Annotations/ folder in {areas} (the {split} split)")
        return out

    def room_dir(self, name: str) -> str:
        m = _SCENE.fullmatch(name)
        d = os.path.join(self.base, m.group(1), m.group(2)) if m else None
        if d is None or not os.path.isdir(os.path.join(d, "Annotations")):
            raise InputError(self.base, f"scene {name!r} is not an Area_N/<room>/Annotations/ folder")
        return d

    # --- one scene --------------------------------------------------------------------------

    def load(self, name: str) -> GTScene:
        d = self.room_dir(name)
        ann = os.path.join(d, "Annotations")
        files = []
        for f in os.listdir(ann):
            if _hidden(f) or not f.endswith(".txt"):
                continue
            m = re.fullmatch(r"(.+)_(\d+)\.txt", f)
            cls = m.group(1) if m else None
            if cls not in self._class_ids:
                raise InputError(os.path.join(ann, f), f"is not named <class>_<k>.txt with an S3DIS class "
                                                       f"({', '.join(CLASSES)}, stairs)")
            files.append((cls, int(m.group(2)), f))
        if not files:
            raise InputError(ann, "holds no <class>_<k>.txt annotation file")
        files.sort(key=lambda t: (t[0], t[1]))
        parts = [read_annotation(os.path.join(ann, f)) for _, _, f in files]
        xyz = np.concatenate([p[0] for p in parts])
        rgb = np.concatenate([p[1] for p in parts])
        sizes = [len(p[0]) for p in parts]
        labels = np.repeat([self._class_ids[c] for c, _, _ in files], sizes)
        instances = np.repeat(np.arange(1, len(files) + 1), sizes)
        cloud = make_cloud(ann, xyz, rgb=rgb)
        meta = {"area": name.split("_")[1], "room": os.path.basename(d), "annotations": len(files),
                "files": [f for _, _, f in files]}
        return GTScene(name, cloud, labels, self.labelset, instances=instances, frames=None, mesh=None,
                       source=d, meta=meta)


def read_annotation(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(xyz float64 (n, 3), rgb uint8 (n, 3)) of one ``x y z r g b`` text file. NumPy's C
    loadtxt parses a million-point file in a fraction of a second; when it refuses a file, a
    second pass over the bytes finds the first bad line so the error can name it."""
    path = check_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "input contained no data": reported below
            a = np.loadtxt(path, dtype=np.float64, ndmin=2, comments=None)
    except (ValueError, UnicodeDecodeError):
        a = None
    if a is None or a.shape[1] != 6 or not np.isfinite(a).all():
        _bad_line(path)
    if not len(a):
        raise InputError(path, "holds no points")
    rgb = a[:, 3:]
    if rgb.min() < 0 or rgb.max() > 255:
        k = int(np.flatnonzero(((rgb < 0) | (rgb > 255)).any(1))[0])
        raise InputError(path, f"point {k + 1} (counting non-blank lines) has a colour outside 0..255 "
                               f"({rgb[k].tolist()})")
    return a[:, :3], np.rint(rgb).astype(np.uint8)


def _bad_line(path: str):
    """Raise naming the first line without six finite numbers (vectorised value count per line,
    then a per-line parse)."""
    data = read_bytes(path)
    byte = np.frombuffer(data, np.uint8)
    ws = np.isin(byte, _WS)
    start = ~ws
    start[1:] &= ws[:-1]
    counts = np.bincount(np.cumsum(byte == 10)[start], minlength=1)
    bad = np.flatnonzero((counts != 0) & (counts != 6))
    if len(bad):
        k = int(bad[0])
        raise InputError(path, f"line {k + 1} holds {int(counts[k])} values, expected 6 (x y z r g b)")
    for k, ln in enumerate(data.split(b"\n")):
        try:
            ok = np.isfinite(np.array(ln.split(), dtype="S").astype(np.float64)).all()
        except ValueError:
            ok = False
        if not ok:
            raise InputError(path, f"line {k + 1} holds a value that is not a finite number ({ln.strip()[:60]!r})")
    raise InputError(path, "is not a text file of x y z r g b lines")
