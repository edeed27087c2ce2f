"""PCD (PCL): ascii, binary and binary_compressed (LZF, decoded natively).

Organised clouds (HEIGHT > 1) keep their (H, W) grid, NaN points included, so image-aligned
data (Kinect frames) stays aligned; ``PointCloud.grid_shape`` tells consumers to mask NaNs.
Packed ``rgb``/``rgba`` become ``PointCloud.rgb``; ``label`` and every other field -> fields.
The VIEWPOINT line is not applied (points are returned as stored).
"""
from __future__ import annotations

import os

import numpy as np

from ..data import PointCloud
from ..errors import InputError
from ._common import check_file, make_cloud, read_bytes, register, rgb_from_packed

_TYPES = {("F", 4): "f4", ("F", 8): "f8", ("I", 1): "i1", ("I", 2): "i2", ("I", 4): "i4", ("I", 8): "i8",
          ("U", 1): "u1", ("U", 2): "u2", ("U", 4): "u4", ("U", 8): "u8"}
LZF_MAX_RATIO = 90  # one 3-byte LZF back reference yields at most 264 bytes
MAX_COUNT = 1 << 20  # values per field per point (PCL descriptors use a few hundred)
_KEYS = ("VERSION", "FIELDS", "SIZE", "TYPE", "COUNT", "WIDTH", "HEIGHT", "VIEWPOINT", "POINTS", "DATA")


def _header(path: str, data: bytes) -> tuple[dict, int]:
    head, pos = {}, 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        if nl < 0:
            raise InputError(path, "PCD header has no DATA line")
        try:
            line = data[pos:nl].decode("ascii").strip()
        except UnicodeDecodeError:
            raise InputError(path, "not a PCD file (header is not text)") from None
        pos = nl + 1
        if not line or line.startswith("#"):
            continue
        key, _, val = line.partition(" ")
        if key.upper() not in _KEYS:
            raise InputError(path, f"not a PCD file (unexpected header line {line[:40]!r})")
        head[key.upper()] = val.split()
        if key.upper() == "DATA":
            return head, pos
    raise InputError(path, "PCD header has no DATA line")


def _dtype(path: str, head: dict) -> tuple[np.dtype, list[str], int, int]:
    for k in ("FIELDS", "SIZE", "TYPE", "WIDTH", "DATA"):
        if k not in head:
            raise InputError(path, f"PCD header lacks {k}")
    names = head["FIELDS"]
    count = head.get("COUNT", ["1"] * len(names))
    if not (len(names) == len(head["SIZE"]) == len(head["TYPE"]) == len(count)):
        raise InputError(path, "PCD header FIELDS/SIZE/TYPE/COUNT have different lengths")
    try:
        width = int(head["WIDTH"][0])
        height = int(head.get("HEIGHT", ["1"])[0])
        points = int(head.get("POINTS", [width * height])[0])
        fields = []
        for i, (n, s, t, c) in enumerate(zip(names, head["SIZE"], head["TYPE"], count)):
            if int(s) <= 0 or int(c) <= 0:  # COUNT 0 would otherwise read as 1
                raise InputError(path, f"PCD field {n!r} has a non-positive SIZE/COUNT ({s}/{c})")
            if int(c) > MAX_COUNT:
                raise InputError(path, f"PCD field {n!r} has an implausible COUNT {c} (at most {MAX_COUNT})")
            code = _TYPES[(t.upper(), int(s))]
            fields.append((n if n != "_" else f"_pad{i}", "<" + code, (int(c),) if int(c) > 1 else ()))
    except (ValueError, IndexError):
        raise InputError(path, "PCD header has a non-integer WIDTH/HEIGHT/POINTS/SIZE/COUNT") from None
    except KeyError as exc:
        raise InputError(path, f"PCD field type/size {exc.args[0]} is not supported") from None
    if width < 0 or height < 0 or points < 0:
        raise InputError(path, "PCD header has a negative size")
    if width * height != points:
        raise InputError(path, f"PCD WIDTH*HEIGHT = {width * height} but POINTS = {points}")
    if len(set(f[0] for f in fields)) != len(fields):
        raise InputError(path, "PCD header repeats a field name")
    return np.dtype(fields), names, width, height


def parse_pcd(path: str) -> tuple[np.ndarray, int, int]:
    """The raw structured point array and (width, height) of a PCD file."""
    check_file(path)
    data = read_bytes(path)
    head, pos = _header(path, data)
    dt, _, width, height = _dtype(path, head)
    n = width * height
    kind = head["DATA"][0].lower()
    if kind == "ascii":
        arr = _ascii(path, data[pos:], dt, n)
    elif kind == "binary":
        need, have = dt.itemsize * n, len(data) - pos
        if have < need:
            raise InputError(path, f"truncated PCD: header says {n} points but the data holds "
                                   f"{have // dt.itemsize} ({need} bytes needed, {have} left)")
        _check_tail(path, data[pos + need:], n, dt.itemsize)
        arr = np.frombuffer(data, dt, n, pos)
    elif kind == "binary_compressed":
        arr = _compressed(path, data, pos, dt, n)
    else:
        raise InputError(path, f"unknown PCD DATA kind {kind!r}")
    return arr, width, height


def _check_tail(path: str, tail: bytes, n: int, record: int) -> None:
    """Bytes after the declared points mean POINTS is wrong (whole records) or the file is not
    what the header says; a little NUL/whitespace padding is tolerated."""
    if not tail or (len(tail) < record and not tail.strip(b"\0 \t\r\n")):
        return
    if len(tail) % record == 0:
        raise InputError(path, f"PCD header says {n} points but the data holds {n + len(tail) // record}")
    raise InputError(path, f"PCD has {len(tail)} bytes after its {n} points: header and data disagree")


def _ascii(path: str, body: bytes, dt: np.dtype, n: int) -> np.ndarray:
    cols = sum(int(np.prod(dt[k].shape)) if dt[k].shape else 1 for k in dt.names)
    toks = body.split()
    if len(toks) != n * cols:
        raise InputError(path, f"PCD ascii data has {len(toks)} values, header implies {n} x {cols}")
    arr = np.empty(n, dt)
    if n == 0:
        return arr
    try:
        table = np.array(toks, dtype="S").reshape(n, cols)
        c = 0
        for k in dt.names:
            w = int(np.prod(dt[k].shape)) if dt[k].shape else 1
            base = dt[k].base
            sub = table[:, c:c + w]
            if base.kind == "f":
                vals = sub.astype(np.float64)
                arr[k] = vals.reshape(arr[k].shape).astype(base)
            elif k in ("rgb", "rgba") or base.kind in "iu":
                # packed colour is often printed as a float (PCL) or as an integer
                try:
                    vals = sub.astype(np.int64)
                except ValueError:
                    vals = sub.astype(np.float32).view(np.int32).astype(np.int64)
                arr[k] = vals.reshape(arr[k].shape).astype(base)
            c += w
    except ValueError:
        raise InputError(path, "PCD ascii data has a non-numeric value") from None
    return arr


def _compressed(path: str, data: bytes, pos: int, dt: np.dtype, n: int) -> np.ndarray:
    from .. import native
    if len(data) - pos < 8:
        raise InputError(path, "truncated PCD: binary_compressed block header missing")
    csize, usize = (int(x) for x in np.frombuffer(data, "<u4", 2, pos))
    if usize != dt.itemsize * n:
        raise InputError(path, f"PCD compressed block holds {usize} bytes, header implies {dt.itemsize * n}")
    if usize > LZF_MAX_RATIO * csize + 64:
        raise InputError(path, f"PCD compressed block claims {usize} bytes from {csize} (impossible for LZF)")
    if pos + 8 + csize > len(data):
        raise InputError(path, f"truncated PCD: compressed block of {csize} bytes, {len(data) - pos - 8} left")
    if n == 0:
        return np.empty(0, dt)
    try:
        raw = native.lzf_decompress(np.frombuffer(data, np.uint8, csize, pos + 8), usize)
    except ValueError as exc:
        raise InputError(path, f"corrupt PCD compressed data ({exc})") from None
    # binary_compressed stores each field for all points contiguously (structure of arrays)
    arr = np.empty(n, dt)
    off = 0
    for k in dt.names:
        size = dt[k].itemsize * n
        arr[k] = raw[off:off + size].view(dt[k].base).reshape(arr[k].shape)
        off += size
    return arr


def read_pcd(path: str, layout=None) -> PointCloud:
    path = os.fspath(path)
    arr, width, height = parse_pcd(path)
    names = list(arr.dtype.names)
    if not {"x", "y", "z"} <= set(names):
        raise InputError(path, "PCD has no x, y, z fields")
    if any(arr[a].ndim != 1 for a in "xyz"):
        raise InputError(path, "PCD x, y, z fields must be single values (COUNT 1)")
    xyz = np.stack([arr["x"], arr["y"], arr["z"]], 1)
    used = {"x", "y", "z"}
    rgb = None
    for key in ("rgb", "rgba"):
        if key in names and arr[key].ndim == 1:
            rgb = rgb_from_packed(np.ascontiguousarray(arr[key]))
            used.add(key)
            break
    normals = None
    if {"normal_x", "normal_y", "normal_z"} <= set(names):
        normals = np.stack([arr["normal_x"], arr["normal_y"], arr["normal_z"]], 1)
        used |= {"normal_x", "normal_y", "normal_z"}
    fields = {k: np.ascontiguousarray(arr[k]) for k in names if k not in used and not k.startswith("_pad")}
    grid = (height, width) if height > 1 else None
    return make_cloud(path, xyz, rgb=rgb, normals=normals, fields=fields, grid_shape=grid)


register("pcd", "cloud", exts=(".pcd",))(read_pcd)
