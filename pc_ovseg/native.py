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


def lzf_decompress(data: bytes | np.ndarray, out_size: int) -> np.ndarray:
    """Decode one LZF block (PCD ``binary_compressed``) into exactly ``out_size`` bytes.

    Raises ValueError when the data is corrupt, truncated or of another size.
    """
    buf = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else _f(data, np.uint8)
    return _C.lzf_decompress(buf.reshape(-1), int(out_size))


# --- views: projection, visibility, splatting (render.cpp) -------------------------------


# --- fusion: streaming accumulation (fusion.cpp) ------------------------------------------


# --- backbone: sparse convolution kernel maps (sparse.cpp) --------------------------------
