"""LAS/LAZ through laspy (LAZ via lazrs): classification, intensity, returns and every
other dimension as fields; 16-bit RGB -> uint8; scaled integer coordinates -> float64 world
-> float32 relative to an origin when they are large: the file's offset when it lies within
4 km of every point (then local = X * scale, one rounding), else whole metres at the centre.

The writer picks LAS 1.4 point format 6 (7 with RGB) so classification is a full byte, and an
offset at the cloud's origin with a 1 mm scale, so coordinates keep millimetre precision.
"""
from __future__ import annotations

import os

import numpy as np

from ..data import PointCloud
from ..errors import InputError
from ._common import ORIGIN_THRESHOLD, check_file, choose_origin, exc_text, make_cloud, output_fields, register

_SKIP = {"X", "Y", "Z", "red", "green", "blue"}
_ALWAYS = ("classification", "intensity", "return_number", "number_of_returns", "gps_time")


def _las_arrays(pts, dims, keep=None) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Integer coordinates (float64), rgb and fields of a laspy point record (whole or a chunk);
    ``keep`` fixes the fields (chunks must agree), else all-zero flag dims are left out."""
    ints = np.stack([np.asarray(pts[a], np.float64) for a in ("X", "Y", "Z")], 1)
    fields = {}
    for d in dims:
        if d in _SKIP:
            continue
        if keep is not None and d not in keep:
            continue
        a = np.asarray(pts[d])
        if keep is not None or d in _ALWAYS or a.any():  # keep the informative dims; all-zero flag bits are noise
            fields[d] = np.ascontiguousarray(a)
    rgb = None
    if {"red", "green", "blue"} <= set(dims):
        c = np.stack([np.asarray(pts[a]) for a in ("red", "green", "blue")], 1)
        # LAS says 16-bit; many writers store 8-bit values. Scale only when 16-bit is used.
        rgb = (c >> 8).astype(np.uint8) if c.max(initial=0) > 255 else c.astype(np.uint8)
    return ints, rgb, fields


def _check_scale(path, scale, offset) -> None:
    if not (np.isfinite(scale).all() and (scale > 0).all() and np.isfinite(offset).all()):
        raise InputError(path, f"invalid LAS scale {scale.tolist()} / offset {offset.tolist()}")


def read_las(path: str, layout=None) -> PointCloud:
    import laspy
    path = check_file(path)
    try:
        las = laspy.read(path)
        ints, rgb, fields = _las_arrays(las, list(las.point_format.dimension_names))
        scale, offset = np.asarray(las.header.scales, np.float64), np.asarray(las.header.offsets, np.float64)
    except InputError:
        raise
    except Exception as exc:  # laspy raises LaspyException, ValueError, struct errors, ...
        raise InputError(path, f"malformed LAS/LAZ ({exc_text(exc)})") from None
    if len(ints) == 0:
        raise InputError(path, "contains no points")
    _check_scale(path, scale, offset)
    # local = X * scale + (offset - origin): one rounding, so a LAS written at offset == origin
    # (write_las) reads back bit-exact
    corners = np.array([ints.min(0), ints.max(0)]) * scale + offset
    origin = choose_origin(corners)
    if origin.any() and np.abs(corners - offset).max() < ORIGIN_THRESHOLD:
        origin = offset.copy()  # the writer's offset is near the data: use it, stay exact
    local = ints * scale + (offset - origin)
    return make_cloud(path, local, rgb=rgb, fields=fields, origin=origin, relative=True)


def iter_las(path: str, chunk: int = 2_000_000):
    """(world xyz float64, rgb, fields) per ``chunk`` points, read with laspy's chunk iterator:
    a LAS/LAZ of any size in the memory of one chunk (pc_ovseg.tiles splits clouds with it)."""
    import laspy
    path = check_file(path)
    try:
        with laspy.open(path) as f:
            scale, offset = np.asarray(f.header.scales, np.float64), np.asarray(f.header.offsets, np.float64)
            _check_scale(path, scale, offset)
            dims = list(f.header.point_format.dimension_names)
            keep = set(_ALWAYS) | {"user_data", "point_source_id"} | set(f.header.point_format.extra_dimension_names)
            for pts in f.chunk_iterator(chunk):
                ints, rgb, fields = _las_arrays(pts, dims, keep)
                yield ints * scale + offset, rgb, fields
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise InputError(path, f"malformed LAS/LAZ ({exc_text(exc)})") from None


register("las", "cloud", exts=(".las", ".laz"))(read_las)


#: VLR holding a result header (pc_ovseg.export) as JSON.
RESULT_VLR = ("pc_ovseg", 1)
#: LAS 1.0-1.3 ``scan_angle_rank`` (whole degrees) -> LAS 1.4 ``scan_angle`` (0.006 degree steps)
_SCAN_ANGLE_STEP = 0.006


def write_las(path, cloud: PointCloud, *, labels=None, scores=None, colors=None, extra=None,
              scale=0.001, offset=None, header: dict | None = None) -> None:
    """LAS 1.4 (LAZ when the name ends in .laz): classification from ``labels`` (0..255),
    RGB, and fields named like LAS dimensions (intensity, classification, scan angle, ...) in
    those dimensions; others become extra bytes.

    Coordinates are stored as integers ``round((world - offset) / scale)``; by default the
    offset is the cloud's origin and the scale 1 mm. Pass a source file's scale/offset to keep
    its quantisation exactly. A result ``header`` goes in a VLR (RESULT_VLR, JSON) and names the
    labels' dimension (``pred_field``): an extra-bytes one keeps the input's classification.
    """
    import json

    import laspy
    path = os.fspath(path)
    rgb = cloud.rgb if colors is None else PointCloud(cloud.xyz, colors).rgb
    las_header = laspy.LasHeader(point_format=7 if rgb is not None else 6, version="1.4")
    scales = np.broadcast_to(np.asarray(scale, np.float64), (3,)).copy()
    offsets = cloud.origin.copy() if offset is None else np.asarray(offset, np.float64).reshape(3)
    if not (scales > 0).all():
        raise ValueError(f"LAS scale must be > 0, got {scales.tolist()}")
    las_header.offsets = offsets
    las_header.scales = scales
    if header is not None:
        las_header.vlrs.append(laspy.VLR(user_id=RESULT_VLR[0], record_id=RESULT_VLR[1],
                                         description="pc_ovseg result (JSON)",
                                         record_data=json.dumps(header).encode()))
    las = laspy.LasData(las_header)
    fields = output_fields(cloud, labels, scores, extra, colors=colors,
                           label_name=(header or {}).get("pred_field", "classification"))
    # integers from the local values: with offset == origin the origin never enters the sum
    ints = np.round((cloud.xyz.astype(np.float64) + (cloud.origin - offsets)) / scales)
    if len(ints) and np.abs(ints).max() >= 2 ** 31:
        raise ValueError(f"coordinates exceed the LAS range at scale {scales.tolist()}; use a larger scale")
    las.X, las.Y, las.Z = (ints[:, i].astype(np.int32) for i in range(3))
    if rgb is not None:
        c = rgb.astype(np.uint16) * 257  # 8-bit -> full 16-bit range, >> 8 gives it back exactly
        las.red, las.green, las.blue = c[:, 0], c[:, 1], c[:, 2]
    std = set(las.point_format.dimension_names)
    if "scan_angle_rank" in fields and "scan_angle" not in fields:
        rank = np.asarray(fields.pop("scan_angle_rank"), np.float64)
        fields["scan_angle"] = np.round(rank / _SCAN_ANGLE_STEP).astype(np.int16)
    for name, a in fields.items():
        a = np.asarray(a)
        if name in _SKIP:
            continue
        if name == "classification":
            if len(a) and (a.min() < 0 or a.max() > 255):
                raise ValueError("LAS classification must be in 0..255")
            las.classification = a.astype(np.uint8)
        elif name in std:
            las[name] = a.astype(np.asarray(las[name]).dtype)
        else:
            if a.ndim != 1 or a.dtype.kind not in "iuf":
                continue  # LAS extra bytes hold scalars only
            las.add_extra_dim(laspy.ExtraBytesParams(name=name, type=a.dtype))
            las[name] = a
    las.write(path)
