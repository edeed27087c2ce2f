"""io: every input format -> PointCloud / Mesh / FrameSequence, and the writers.

``read`` looks the path up in a registry (extension for files, a probe per folder layout or
JSON kind), so formats are added by registering a reader, not by growing an if-chain.
``layout`` names the columns of raw arrays (``"xyzrgb"``) or, for a folder, forces a layout
(``"7scenes"``, ``"scannet"``). All bad input raises ``InputError`` with the path and problem.
"""
from __future__ import annotations

import os

import numpy as np

from ..data import FrameSequence, Mesh, PointCloud
from ..errors import InputError
from . import arrays, las, mesh, pcd, ply, rgbd, rosbag, sens  # noqa: F401  (registers the readers)
from ._common import FILE_READERS, FOLDER_READERS, Reader, exc_text, extension
from .arrays import read_labels, write_npz
from .describe import describe, format_description
from .las import write_las
from .ply import write_ply

__all__ = ["read", "read_cloud", "downsample", "read_mesh", "read_frames", "read_labels", "write", "write_ply",
           "write_las", "write_npz", "describe", "format_description", "reader_for", "WRITERS"]


def reader_for(path, layout: str | None = None) -> Reader:
    """The registered reader for a path (raises InputError when there is none)."""
    p = os.fspath(path)
    if not os.path.exists(p):
        raise InputError(p, "no such file or directory")
    if os.path.isdir(p):
        if layout:
            named = [r for r in FOLDER_READERS if r.name == layout]
            if named:
                return named[0]
        for r in FOLDER_READERS:
            if r.probe(p):
                return r
        raise InputError(p, "folder is not a known RGB-D layout (7-Scenes, ScanNet export); "
                            "describe it with a JSON manifest (see docs/io.md)")
    r = FILE_READERS.get(extension(p))
    if r is None:
        known = ", ".join(sorted(FILE_READERS))
        raise InputError(p, f"unknown file type {extension(p) or '(no extension)'!r} (known: {known})")
    return r


def read(path, *, layout: str | None = None) -> PointCloud | Mesh | FrameSequence:
    """Read any supported cloud, mesh or RGB-D sequence."""
    p = os.fspath(path)
    r = reader_for(p, layout)
    folder_layout = os.path.isdir(p) and layout in {x.name for x in FOLDER_READERS}
    try:
        return r.read(p, None if folder_layout else layout)
    except InputError:
        raise
    except (MemoryError, RecursionError):
        raise InputError(p, "file is too large or too deeply nested to read") from None
    except (ValueError, KeyError, IndexError, TypeError, OSError, EOFError) as exc:
        # readers validate what they know; anything else is still the file's fault, said in one line
        raise InputError(p, f"cannot read as {r.name} ({exc_text(exc)})") from None


def read_cloud(path, *, layout: str | None = None, voxel_size: float | None = None) -> PointCloud:
    """A point cloud; meshes give their vertices (with colours and fields).

    ``voxel_size`` (metres) thins it to one point per voxel with ``downsample``.
    """
    obj = read(path, layout=layout)
    if isinstance(obj, Mesh):
        obj = obj.to_point_cloud()
    if isinstance(obj, FrameSequence):
        raise InputError(path, "is an RGB-D sequence, not a point cloud (use read_frames)")
    return obj if voxel_size is None else downsample(obj, voxel_size)


def downsample(cloud: PointCloud, voxel_size: float) -> PointCloud:
    """One point per voxel of ``floor(xyz / voxel_size)``: the first point of each voxel, so every
    field (labels, intensity, colour) stays a real measured value. NaN points (organised clouds)
    are dropped, and with them the grid. Uses the native voxeliser."""
    from ..native import voxelize
    if not voxel_size > 0:
        raise ValueError(f"voxel_size must be > 0, got {voxel_size}")
    finite = np.isfinite(cloud.xyz).all(1)
    base = cloud if finite.all() and cloud.grid_shape is None else cloud.select(np.flatnonzero(finite))
    try:
        _, _, first, _ = voxelize(base.xyz, voxel_size)
    except ValueError as exc:
        raise InputError(cloud.source, f"cannot voxelise at {voxel_size} m: {exc}") from None
    return base.select(first)


def read_mesh(path) -> Mesh:
    obj = read(path)
    if not isinstance(obj, Mesh):
        raise InputError(path, f"holds a {type(obj).__name__}, not a mesh (no faces)")
    return obj


def read_frames(path, *, layout: str | None = None) -> FrameSequence:
    """A posed RGB-D sequence: 7-Scenes or ScanNet folder, scene.json, or a JSON manifest."""
    obj = read(path, layout=layout)
    if not isinstance(obj, FrameSequence):
        raise InputError(path, f"holds a {type(obj).__name__}, not an RGB-D sequence")
    return obj


WRITERS = {".ply": write_ply, ".las": write_las, ".laz": write_las, ".npz": write_npz}


def write(path, cloud: PointCloud | Mesh, *, labels=None, scores=None, colors=None, extra=None,
          header: dict | None = None) -> None:
    """Write by extension: .ply (all fields, binary), .las/.laz (classification = labels), .npz.

    Input fields never share a name with what is written (``input_<name>``; docs/io.md). A result
    ``header`` (pc_ovseg.export) is stored in the file and names the labels' field.
    """
    p = os.fspath(path)
    fn = WRITERS.get(extension(p))
    if fn is None:
        raise ValueError(f"cannot write {p!r}: use one of {', '.join(sorted(WRITERS))}")
    if isinstance(cloud, Mesh) and fn is not write_ply:
        cloud = cloud.to_point_cloud()
    n = len(cloud.vertices) if isinstance(cloud, Mesh) else len(cloud)
    for name, a in (("labels", labels), ("scores", scores), ("colors", colors)):
        if a is not None and len(a) != n:
            raise ValueError(f"{name} has {len(a)} rows for {n} points")
    fn(p, cloud, labels=labels, scores=scores, colors=colors, extra=extra, header=header)
