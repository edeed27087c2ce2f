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

def _pose_args(camera) -> tuple[np.ndarray, np.ndarray]:
    w2c = np.linalg.inv(np.asarray(camera.cam_to_world, np.float64))[:3, :4]
    K = np.asarray(camera.K, np.float64)
    return _f(w2c, np.float64), _f([K[0, 0], K[1, 1], K[0, 2], K[1, 2]], np.float64)


def depth_test(xyz: np.ndarray, camera, depth: np.ndarray, *, rel_tol: float = 0.05, abs_tol: float = 0.05,
               point_tol: np.ndarray | None = None, border: int = 0, near: float = 1e-3
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points of ``xyz`` (local frame) that ``camera`` sees on ``depth`` (H, W metres, 0 = none).

    A point is visible when it projects at least ``border`` pixels inside the image onto a valid
    depth d with |d - z| <= max(abs_tol, rel_tol * d, point_tol[i]). ``camera`` must match the
    depth map's resolution. Returns ``point_ids`` (M,) int64, ``pixels`` (M, 2) int32 (row, col)
    and the points' camera depths ``z`` (M,) float32.
    """
    w2c, intr = _pose_args(camera)
    tol = np.zeros(0, np.float32) if point_tol is None else _f(point_tol).reshape(-1)
    return _C.depth_test(_f(xyz).reshape(-1, 3), w2c, intr, _f(depth), float(rel_tol), float(abs_tol), tol,
                         int(border), float(near))


def splat(xyz: np.ndarray, camera, *, radius: np.ndarray | None = None, max_pixel_radius: float = 8.0,
          near: float = 1e-3, fill_iters: int = 2, fill_reach: int = 4, fill_tol: float = 0.05,
          fill_need: int = 6, surface_owner: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Z-buffer ``xyz`` into ``camera``'s image as discs of world radius ``radius`` (per point).

    Nearest point wins each pixel's depth; with ``surface_owner`` the index goes to the disc on
    that front surface whose centre is nearest the pixel (so a point owns its own pixel); ``fill_iters`` passes of hole filling then close gaps between
    splats and hide far surfaces that show through near ones (see render.cpp). Returns ``depth``
    (H, W) float32 metres (0 = empty) and ``index`` (H, W) int64 point id (-1 = empty).
    """
    w2c, intr = _pose_args(camera)
    r = np.zeros(0, np.float32) if radius is None else _f(radius).reshape(-1)
    return _C.splat(_f(xyz).reshape(-1, 3), w2c, intr, int(camera.width), int(camera.height), r,
                    float(max_pixel_radius), float(near), int(fill_iters), int(fill_reach), float(fill_tol),
                    int(fill_need), bool(surface_owner))


def fill_holes(depth: np.ndarray, index: np.ndarray, *, iters: int = 2, reach: int = 4, tol: float = 0.05,
               need: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """The splat kernel's hole filling applied to an existing depth/index pair."""
    return _C.fill_holes(_f(depth), _f(index, np.int64), int(iters), int(reach), float(tol), int(need))



# --- fusion: streaming accumulation (fusion.cpp) ------------------------------------------

def fuse_accumulate(acc: np.ndarray, wsum: np.ndarray, count: np.ndarray, ids: np.ndarray,
                    feats: np.ndarray, weights: np.ndarray) -> None:
    """In place: running weighted mean of ``feats`` into the fp16 accumulator rows ``ids``.

    ``acc`` (N, D) float16, ``wsum`` (N,) float32, ``count`` (N,) uint16; ids unique per call.
    """
    if acc.dtype != np.float16 or not acc.flags.c_contiguous:
        raise ValueError("acc must be a C-contiguous float16 array")
    _C.fuse_accumulate(acc.view(np.uint16), wsum, count, _f(ids, np.int64), _f(feats), _f(weights))


def fuse_add_weights(totals: np.ndarray, ids: np.ndarray, weights: np.ndarray, group: int) -> None:
    """In place: ``totals[ids, group] += weights`` (ids may repeat)."""
    _C.fuse_add_weights(totals, _f(ids, np.int64), _f(weights), int(group))


def segment_graph(n: int, u: np.ndarray, v: np.ndarray, w: np.ndarray, k: float, min_size: int) -> np.ndarray:
    """Felzenszwalb graph segmentation of n nodes with weighted edges (u, v, w) -> (n,) segment ids."""
    return _C.segment_graph(int(n), _f(u, np.int64), _f(v, np.int64), _f(w), float(k), int(min_size))


def normalize_rows_half(acc: np.ndarray) -> np.ndarray:
    """In place L2 normalisation of float16 rows (zero rows stay zero); returns the prior norms."""
    if acc.dtype != np.float16 or not acc.flags.c_contiguous:
        raise ValueError("acc must be a C-contiguous float16 array")
    return _C.normalize_rows_half(acc.view(np.uint16))



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


# --- mapping: streamed voxel hash (mapping.cpp) -------------------------------------------

def voxel_hash(voxel_size: float):
    """A sparse voxel hash (``VoxelHash``): ``insert``/``find`` (N,3) float32 points -> slot
    int64 (-1 = out of range / absent), ``coords()``, ``keep(mask)`` -> old->new slot map."""
    return _C.VoxelHash(float(voxel_size))


def hash_points(table, xyz: np.ndarray, *, insert: bool = True) -> np.ndarray:
    """Slots of ``xyz`` in ``table`` (inserting new voxels when ``insert``)."""
    xyz = _f(xyz).reshape(-1, 3)
    return table.insert(xyz) if insert else table.find(xyz)


def map_accumulate(slots: np.ndarray, xyz: np.ndarray, rgb: np.ndarray | None, pos: np.ndarray, col: np.ndarray,
                   npts: np.ndarray, obs: np.ndarray, last: np.ndarray, frame: int) -> None:
    """In place: one frame's points into the per-voxel running means and counts (see mapping.cpp).

    ``pos``/``col`` (C, 3) float32, ``npts`` (C,) uint32, ``obs`` (C,) uint16, ``last`` (C,) int32."""
    for a, dt in ((pos, np.float32), (col, np.float32), (npts, np.uint32), (obs, np.uint16), (last, np.int32)):
        if a.dtype != dt or not a.flags.c_contiguous:
            raise ValueError(f"per-voxel arrays must be C-contiguous {np.dtype(dt).name}")
    rgb = np.zeros((0, 3), np.uint8) if rgb is None else _f(rgb, np.uint8).reshape(-1, 3)
    _C.map_accumulate(_f(slots, np.int64), _f(xyz).reshape(-1, 3), rgb, pos, col, npts, obs, last, int(frame))
