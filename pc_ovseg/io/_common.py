"""Shared reader plumbing: the reader registry, path checks and cloud validation.

Readers register themselves by extension (files) or by a probe (folders, JSON files), so
``pc_ovseg.io.read`` is a table lookup and adding a format is one decorated function.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..data import PointCloud
from ..errors import InputError

# Absolute coordinates above this (metres) are moved to a float64 origin: float32 has an ulp
# of 0.49 mm at 4096 m, so below it millimetre precision is kept without an offset.
ORIGIN_THRESHOLD = 4096.0
# No real cloud spans more than this (metres) around its origin (the file's offset, or the
# centre we choose): beyond it the bytes were misread (float64 read as float32, wrong layout).
MAX_EXTENT = 1e7
# Float fields under these names are class ids: NaN or fractions there are corruption.
LABEL_FIELDS = ("label", "labels", "classification")


@dataclass(frozen=True)
class Reader:
    """One input format: ``read(path, layout)`` returns a PointCloud, Mesh or FrameSequence."""

    name: str
    kind: str                                   # "cloud", "mesh", "cloud|mesh" or "frames"
    read: Callable
    probe: Callable[[str], bool] | None = None  # for folders / JSON: does this path match?


FILE_READERS: dict[str, Reader] = {}   # ".ext" -> reader
FOLDER_READERS: list[Reader] = []      # probed in order
JSON_READERS: list[Reader] = []        # probed in order (a .json file holds frames)


def register(name: str, kind: str, *, exts: tuple[str, ...] = (), folder_probe=None, json_probe=None):
    """Register ``fn(path, layout)`` for extensions, or as a folder / JSON layout with a probe."""
    def deco(fn):
        for e in exts:
            FILE_READERS[e.lower()] = Reader(name, kind, fn)
        if folder_probe is not None:
            FOLDER_READERS.append(Reader(name, kind, fn, folder_probe))
        if json_probe is not None:
            JSON_READERS.append(Reader(name, kind, fn, json_probe))
        return fn
    return deco


def extension(path: str) -> str:
    name = os.path.basename(path).lower()
    return os.path.splitext(name)[1]


def check_file(path) -> str:
    """Existing, non-empty regular file, else an InputError naming it."""
    p = os.fspath(path)
    if not os.path.exists(p):
        raise InputError(p, "no such file or directory")
    if os.path.isdir(p):
        raise InputError(p, "is a directory, expected a file")
    if not os.path.isfile(p):
        raise InputError(p, "is not a regular file")
    if os.path.getsize(p) == 0:
        raise InputError(p, "file is empty")
    return p


def read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None


def choose_origin(xyz: np.ndarray) -> np.ndarray:
    """A float64 origin (whole metres, bounding-box centre) when coordinates are too large for float32."""
    finite = xyz[np.isfinite(xyz).all(1)] if len(xyz) else xyz
    if not len(finite) or np.abs(finite).max() < ORIGIN_THRESHOLD:
        return np.zeros(3)
    lo, hi = finite.min(0).astype(np.float64), finite.max(0).astype(np.float64)
    return np.round((lo + hi) / 2.0)


def make_cloud(path: str, xyz: np.ndarray, *, rgb=None, normals=None, fields=None, origin=None,
               grid_shape=None, relative: bool = False, hint: str = "") -> PointCloud:
    """Validate and build a PointCloud: non-empty; finite unless organised; origin for big coordinates.

    ``relative=True`` means ``xyz`` is already relative to the given ``origin``.
    Organised clouds (``grid_shape`` set) keep their NaN points so the (H, W) grid stays intact;
    unorganised clouds with NaN/Inf coordinates are rejected (they are corrupt, not sparse), and so
    is any cloud reaching beyond MAX_EXTENT from its origin, or with NaN / fractional class ids in
    a float LABEL_FIELDS field. ``hint`` ends those messages (raw arrays: "check --layout").
    """
    n = len(xyz)
    if n == 0:
        raise InputError(path, "contains no points")
    finite = np.isfinite(xyz).all(1)
    if grid_shape is None and not finite.all():
        raise InputError(path, f"{int((~finite).sum())} of {n} points have NaN/Inf coordinates{hint}")
    if grid_shape is not None and not finite.any():
        raise InputError(path, "organised cloud has no valid (finite) point")
    if origin is None:
        origin = choose_origin(xyz) if xyz.dtype == np.float64 else np.zeros(3)
    origin = np.asarray(origin, np.float64)
    if origin.shape != (3,) or not np.isfinite(origin).all():
        raise InputError(path, f"origin must be 3 finite numbers, got {origin.reshape(-1).tolist()[:6]}")
    local = (xyz.astype(np.float64) - origin) if origin.any() and not relative else xyz
    _check_extent(path, local if finite.all() else local[finite], hint)
    _check_label_fields(path, fields or {}, None if finite.all() else finite)
    # arrays viewed straight from file bytes are read-only; callers expect ordinary arrays
    fields = {k: (v if v.flags.writeable else v.copy()) for k, v in (fields or {}).items()}
    try:
        return PointCloud(local, rgb, normals, fields, origin, grid_shape=grid_shape,
                          source=path)
    except ValueError as exc:
        raise InputError(path, str(exc)) from None


def _check_extent(path: str, local: np.ndarray, hint: str) -> None:
    """Refuse coordinates no survey has: the signature of bytes read with the wrong dtype/layout."""
    if not len(local) or local.dtype.kind not in "fiu":
        return
    reach = float(max(local.max(), -local.min()))
    if reach > MAX_EXTENT:
        raise InputError(path, f"implausible coordinates: {reach:.3g} m from the origin (more than "
                               f"{MAX_EXTENT:g} m): {hint.strip(' ()') or 'corrupt data, or the wrong dtype/layout?'}")


def _check_label_fields(path: str, fields: dict, valid) -> None:
    """Class ids stored as floats must be whole numbers: NaN would silently become 'ignored'."""
    for k in LABEL_FIELDS:
        v = fields.get(k)
        if v is None or v.dtype.kind != "f":
            continue
        v = v if valid is None or len(v) != len(valid) else v[valid]
        nonfinite = ~np.isfinite(v)
        frac = np.abs(v[~nonfinite] - np.rint(v[~nonfinite])) > 1e-3
        if nonfinite.any() or frac.any():
            raise InputError(path, f"field {k!r} must hold one integer per point (class ids); "
                                   f"{int(nonfinite.sum())} are NaN/Inf, {int(frac.sum())} fractional")


def exc_text(exc: BaseException, limit: int = 160) -> str:
    """'Type: message' of a library exception, on one line (for wrapping into InputError)."""
    msg = " ".join(str(exc).split())[:limit]
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def rgb_from_packed(v: np.ndarray) -> np.ndarray:
    """PCL-style packed 0x00RRGGBB (uint32 or float32 bits) -> (N, 3) uint8."""
    u = np.ascontiguousarray(v).view(np.uint32) if v.dtype.itemsize == 4 else v.astype(np.uint32)
    return np.stack([(u >> 16) & 255, (u >> 8) & 255, u & 255], 1).astype(np.uint8)


def count_summary(values: np.ndarray) -> dict[str, int]:
    """{value: count} of an integer array, sorted by value (keys are strings for JSON)."""
    v = np.asarray(values).reshape(-1)
    if v.dtype.kind == "f":
        v = v[np.isfinite(v)]
        if len(v) and not np.all(v == np.round(v)):
            return {}
        v = v.astype(np.int64)
    if v.dtype.kind not in "iub" or not len(v):
        return {}
    u, c = np.unique(v, return_counts=True)
    return {str(int(a)): int(b) for a, b in zip(u, c)}


INPUT_PREFIX = "input_"


def output_fields(cloud: PointCloud, labels=None, scores=None, extra=None, *, label_name: str = "label",
                  colors=None) -> dict:
    """The per-point fields a writer stores: the cloud's own, then labels/scores/extra on top.

    What is written never shares a name with what the input carried: a cloud field that a
    prediction, score or extra field would take is kept as ``input_<name>`` (a ground-truth
    ``label`` must never be read back as the prediction), and when ``colors`` replace the display
    colour, the cloud's own colour is kept as ``input_red/input_green/input_blue``.
    """
    written = dict(extra or {})
    if labels is not None:
        written[label_name] = np.asarray(labels)
    if scores is not None:
        written["score"] = np.asarray(scores, np.float32)
    fields = {(INPUT_PREFIX + k if k in written else k): v for k, v in cloud.fields.items()}
    if colors is not None and cloud.rgb is not None:
        fields.update({INPUT_PREFIX + c: cloud.rgb[:, i] for i, c in enumerate(("red", "green", "blue"))})
    fields.update(written)
    return fields
