"""The native kernels (C++17/OpenMP, ``pc_ovseg._native``) behind one typed module.

Every caller goes through these wrappers: they fix dtypes and contiguity so the C++ side can
assume C-contiguous CPU arrays. Each stage owns one section below.
"""
from __future__ import annotations

import numpy as np

try:
    from . import _native as _C
except ImportError as exc:  # pragma: no cover - only when the package was not built
    raise ImportError(
        "pc_ovseg._native is not built: install with `pip install .` (builds it with CMake), "
        "or run scripts/dev_build.sh when working from a source tree"
    ) from exc

HAS_OPENMP: bool = bool(_C.openmp)


def _f(a, dtype=np.float32) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=dtype)


# --- voxels (io downsampling, backbone voxelisation) -------------------------------------

def voxelize(xyz: np.ndarray, voxel_size: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Unique voxels of ``floor(xyz / voxel_size)`` in order of first appearance.

    Returns ``coords`` (M,3) int32, ``inverse`` (N,) int64 point->voxel, ``first`` (M,) int64
    first point of each voxel, ``counts`` (M,) int64.
    """
    xyz = np.asarray(xyz)
    xyz = _f(xyz, np.float64 if xyz.dtype == np.float64 else np.float32).reshape(-1, 3)
    return _C.voxelize(xyz, float(voxel_size))


def voxel_downsample(xyz: np.ndarray, voxel_size: float, mode: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """Downsample to one point per voxel: ``mode='mean'`` (centroid) or ``'first'``.

    Returns the kept/averaged positions (M,3) float32 and the point->voxel map (N,).
    """
    coords, inverse, first, counts = voxelize(xyz, voxel_size)
    if mode == "first":
        return np.asarray(xyz, np.float32)[first], inverse
    sums = np.zeros((len(first), 3), np.float64)
    np.add.at(sums, inverse, np.asarray(xyz, np.float64)) if len(first) < 64 else _bincount3(sums, inverse, xyz)
    return (sums / counts[:, None]).astype(np.float32), inverse


def _bincount3(out: np.ndarray, inverse: np.ndarray, xyz: np.ndarray) -> None:
    for a in range(3):
        out[:, a] = np.bincount(inverse, weights=np.asarray(xyz[:, a], np.float64), minlength=len(out))


# --- views: projection, visibility, splatting (render.cpp) -------------------------------


# --- fusion: streaming accumulation (fusion.cpp) ------------------------------------------


# --- backbone: sparse convolution kernel maps (sparse.cpp) --------------------------------

def sparse_downsample(coords: np.ndarray, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Unique rows of ``floor(coords / stride) * stride`` (batch column kept), first-appearance order.

    ``coords`` is (N,4) int32 (batch, x, y, z). Returns coarse coords (M,4) int32 and the
    fine->coarse row map (N,) int64.
    """
    return _C.sparse_downsample(_f(coords, np.int32).reshape(-1, 4), int(stride))


def sparse_kernel_map(in_coords: np.ndarray, out_coords: np.ndarray, kernel_size: int,
                      dilation: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Neighbour pairs (in_rows, out_rows, offsets) with ``in = out + step_k * dilation``.

    Pairs of kernel offset k lie in ``[offsets[k], offsets[k+1])``; k = (i*K + j)*K + l over
    per-axis steps (x, y, z; last axis fastest), odd K centred, even K starting at 0.
    Input coordinates must be unique.
    """
    return _C.sparse_kernel_map(_f(in_coords, np.int32).reshape(-1, 4), _f(out_coords, np.int32).reshape(-1, 4),
                                int(kernel_size), int(dilation))


def scatter_add_rows(out: np.ndarray, rows: np.ndarray, src: np.ndarray) -> None:
    """In place ``out[rows[p]] += src[p]`` (float32/float64) for UNIQUE rows, threaded.

    Faster than ``torch.index_add_`` on the CPU for the narrow feature rows of sparse convs;
    uniqueness holds within one kernel offset of a kernel map.
    """
    if not (out.flags.c_contiguous and out.dtype in (np.float32, np.float64)):
        raise ValueError("out must be a C-contiguous float32/float64 array (it is updated in place)")
    _C.scatter_add_rows(out, _f(rows, np.int64), _f(src, out.dtype))
