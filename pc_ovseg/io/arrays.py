"""NumPy and raw binary clouds: .npy (N, k), .npz (named arrays), raw .bin float32 (N, k).

A bare array does not say what its columns are, so the caller states a ``layout``: one letter
per column (``x y z`` coordinates, ``i`` intensity, ``r g b`` colour, ``l`` label, ``_`` skip)
such as ``"xyz"``, ``"xyzi"``, ``"xyzrgb"``, or comma-separated names
(``"x,y,z,intensity,label"``). An (N, 3) array needs none. Labels stored beside the points
are attached as the ``label`` field: ``labels_X.npy`` next to ``points_X.npy`` (the
SemanticKITTI sample), or ``X.label`` in ``../labels/`` next to ``velodyne/X.bin``.
"""
from __future__ import annotations

import os
import zipfile

import numpy as np

from ..data import PointCloud
from ..errors import InputError
from ._common import check_file, make_cloud, output_fields, register

_LETTERS = {"x": "x", "y": "y", "z": "z", "i": "intensity", "r": "red", "g": "green", "b": "blue",
            "l": "label", "_": "_"}
_XYZ_KEYS = ("xyz", "points", "coord", "coords", "positions", "vertices", "pos")
_RGB_KEYS = ("rgb", "colors", "color", "colours", "colour")
_LABEL_KEYS = ("label", "labels", "semantic", "segment", "classification")
_NON_POINT = {"origin", "header", "features", "weight", "view_count"}


def parse_layout(layout: str, ncols: int, path: str) -> list[str]:
    """Column names of a layout string; an error names the file when it does not fit."""
    if "," in layout:
        cols = [c.strip() for c in layout.split(",")]
    else:
        bad = [c for c in layout.lower() if c not in _LETTERS]
        if bad:
            raise InputError(path, f"layout {layout!r} has unknown column letter {bad[0]!r} "
                                   f"(use x y z i r g b l _ or comma-separated names)")
        cols = [_LETTERS[c] for c in layout.lower()]
    if len(cols) != ncols:
        raise InputError(path, f"layout {layout!r} names {len(cols)} columns, data has {ncols}")
    if not {"x", "y", "z"} <= set(cols):
        raise InputError(path, f"layout {layout!r} lacks x, y or z")
    return cols


_LAYOUT_HINT = " (wrong dtype or layout? check --layout)"
_BIN_HINT = " (wrong dtype or layout? check --layout, and that the .bin holds little-endian float32)"


def cloud_from_table(path: str, table: np.ndarray, layout: str | None, hint: str = _LAYOUT_HINT) -> PointCloud:
    if table.ndim != 2:
        raise InputError(path, f"expected an (N, k) array, got shape {table.shape}")
    if table.dtype.kind not in "iuf":
        raise InputError(path, f"expected a numeric array, got {table.dtype}")
    if layout is None:
        if table.shape[1] != 3:
            raise InputError(path, f"{table.shape[1]} columns: state the layout (e.g. --layout xyzrgb)")
        layout = "xyz"
    cols = parse_layout(layout, table.shape[1], path)
    col = {c: table[:, i] for i, c in enumerate(cols) if c != "_"}
    xyz = np.stack([col["x"], col["y"], col["z"]], 1)
    rgb = None
    if {"red", "green", "blue"} <= set(col):
        c = np.stack([col["red"], col["green"], col["blue"]], 1)
        if c.dtype.kind == "f" and np.isfinite(c).all() and c.max(initial=0) > 255:
            raise InputError(path, "colour columns exceed 255: check the layout")
        rgb = c
    fields = {}
    for k, v in col.items():
        if k in ("x", "y", "z", "red", "green", "blue"):
            continue
        if k == "label" and v.dtype.kind == "f":
            v = v.astype(np.int64) if np.all(v == np.round(v)) else v
        fields[k] = np.ascontiguousarray(v)
    return make_cloud(path, xyz, rgb=rgb, fields=_sibling_labels(path, len(xyz), fields), hint=hint)


def _sibling_labels(path: str, n: int, fields: dict) -> dict:
    """Attach labels stored next to the points file (documented conventions only)."""
    if "label" in fields:
        return fields
    d, name = os.path.split(path)
    cands = []
    if "points" in name:
        stem = name.replace("points", "labels", 1)
        cands += [os.path.join(d, stem), os.path.join(d, os.path.splitext(stem)[0] + ".label")]
    stem = os.path.splitext(name)[0]
    cands.append(os.path.join(os.path.dirname(d), "labels", stem + ".label"))
    for c in cands:
        if os.path.isfile(c):
            lab = read_labels(c)
            if len(lab) != n:
                raise InputError(c, f"has {len(lab)} labels for {n} points in {path}")
            return {**fields, "label": lab}
    return fields


def read_npy(path: str, layout=None) -> PointCloud:
    path = check_file(path)
    try:
        a = np.load(path, allow_pickle=False, mmap_mode=None)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(path, f"not a valid .npy file ({' '.join(str(exc).split())[:120]})") from None
    if a.dtype.names:  # structured array: columns by name
        names = a.dtype.names
        table = np.stack([a[k].astype(np.float64) for k in names], 1)
        return cloud_from_table(path, table, layout or ",".join(names))
    return cloud_from_table(path, a, layout)


def read_bin(path: str, layout=None) -> PointCloud:
    """Raw little-endian float32 rows; ``layout`` gives the columns (e.g. KITTI: ``xyzi``)."""
    path = check_file(path)
    if layout is None:
        raise InputError(path, "raw .bin needs its column layout (e.g. layout='xyzi' or --layout xyzrgb)")
    ncols = len(layout.split(",")) if "," in layout else len(layout)
    size = os.path.getsize(path)
    if size % (4 * ncols):
        raise InputError(path, f"size {size} bytes is not a whole number of {ncols}-column float32 rows")
    table = np.fromfile(path, "<f4").reshape(-1, ncols)
    return cloud_from_table(path, table, layout, _BIN_HINT)


def read_npz(path: str, layout=None) -> PointCloud:
    """Named arrays: xyz/points, rgb/colors, normals, origin, labels, ``field.NAME`` and any
    other (N, ...) array as a field (FeatureCloud files read as their cloud)."""
    path = check_file(path)
    try:
        z = np.load(path, allow_pickle=False)
        arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise InputError(path, f"not a valid .npz file ({' '.join(str(exc).split())[:120]})") from None
    key = next((k for k in _XYZ_KEYS if k in arrays), None)
    if key is None:
        if len(arrays) == 1:
            return cloud_from_table(path, next(iter(arrays.values())), layout)
        raise InputError(path, f"no point array (one of {', '.join(_XYZ_KEYS)}) among {sorted(arrays)[:8]}")
    xyz = arrays.pop(key)
    if xyz.ndim != 2 or xyz.shape[1] < 3:
        raise InputError(path, f"{key!r} must be (N, 3), got {xyz.shape}")
    if xyz.shape[1] > 3:
        return cloud_from_table(path, xyz, layout)
    n = len(xyz)
    rk = next((k for k in _RGB_KEYS if k in arrays), None)
    rgb = arrays.pop(rk) if rk else None
    normals = arrays.pop("normals", None)
    origin = arrays.pop("origin", None)
    fields = {}
    for k, v in arrays.items():
        if k in _NON_POINT or v.ndim == 0 or len(v) != n:
            continue
        name = k[6:] if k.startswith("field.") else k
        if name in _LABEL_KEYS[1:2]:
            name = "label"
        fields[name] = v
    if rgb is not None and (rgb.ndim != 2 or rgb.shape != (n, 3)):
        raise InputError(path, f"{rk!r} must be ({n}, 3), got {rgb.shape}")
    if normals is not None and normals.shape != (n, 3):
        raise InputError(path, f"'normals' must be ({n}, 3), got {normals.shape}")
    if origin is not None:
        if origin.shape != (3,) or not np.isfinite(origin).all():
            raise InputError(path, f"'origin' must be 3 finite numbers, got {origin.shape}")
        return make_cloud(path, xyz, rgb=rgb, normals=normals, fields=fields, origin=origin, relative=True)
    return make_cloud(path, xyz, rgb=rgb, normals=normals, fields=fields)


register("npy", "cloud", exts=(".npy",))(read_npy)
register("bin", "cloud", exts=(".bin",))(read_bin)
register("npz", "cloud", exts=(".npz",))(read_npz)


def write_npz(path, cloud: PointCloud, *, labels=None, scores=None, colors=None, extra=None,
              header: dict | None = None) -> None:
    """xyz (local float32), origin, rgb, normals and ``field.NAME`` arrays, uncompressed; a result
    ``header`` (pc_ovseg.export) as JSON bytes under ``header``, naming the labels' field."""
    arrays = {"xyz": cloud.xyz, "origin": cloud.origin}
    rgb = cloud.rgb if colors is None else PointCloud(cloud.xyz, colors).rgb
    if rgb is not None:
        arrays["rgb"] = rgb
    if cloud.normals is not None:
        arrays["normals"] = cloud.normals
    if header is not None:
        import json
        arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    fields = output_fields(cloud, labels, scores, extra, colors=colors,
                           label_name=(header or {}).get("pred_field", "label"))
    for k, v in fields.items():
        v = np.asarray(v)
        if len(v) != len(cloud):
            raise ValueError(f"field {k!r} has {len(v)} rows, expected {len(cloud)}")
        arrays[f"field.{k}"] = v
    np.savez(os.fspath(path), **arrays)


# --- labels ------------------------------------------------------------------------------------

def _labels_npy(path):
    try:
        a = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(path, f"not a valid .npy file ({' '.join(str(exc).split())[:120]})") from None
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1 or a.dtype.kind not in "iu":
        raise InputError(path, f"labels must be one integer per point, got {a.dtype} {a.shape}")
    return a


def _labels_label(path):
    """SemanticKITTI: uint32, lower 16 bits semantic class, upper 16 instance id."""
    size = os.path.getsize(path)
    if size % 4:
        raise InputError(path, f"size {size} is not a whole number of uint32 labels")
    return (np.fromfile(path, "<u4") & 0xFFFF).astype(np.int32)


def _labels_txt(path):
    try:
        with open(path, "rb") as f:
            toks = f.read().split()
        a = np.array(toks, dtype=np.float64) if toks else np.zeros(0)
    except ValueError:
        raise InputError(path, "labels .txt must hold one integer per line") from None
    if not np.isfinite(a).all():
        raise InputError(path, f"labels .txt holds {int((~np.isfinite(a)).sum())} NaN/Inf values")
    if len(a) and not np.all(a == np.round(a)):
        raise InputError(path, "labels .txt holds non-integer values")
    if len(a) and np.abs(a).max() >= 2 ** 31:
        raise InputError(path, f"labels .txt holds {np.abs(a).max():.3g}, out of range for a class id")
    return a.astype(np.int64)


_LABEL_READERS = {".npy": _labels_npy, ".label": _labels_label, ".txt": _labels_txt}


def read_labels(path) -> np.ndarray:
    """Per-point integer labels from .npy, SemanticKITTI .label or .txt (one per line)."""
    path = check_file(path)
    ext = os.path.splitext(path)[1].lower()
    fn = _LABEL_READERS.get(ext)
    if fn is None:
        raise InputError(path, f"unknown label file type {ext!r} (use .npy, .label or .txt)")
    a = fn(path)
    if len(a) == 0:
        raise InputError(path, "holds no labels")
    return a
