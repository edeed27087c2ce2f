"""SLIC superpixels in numpy/scipy: the mask source that needs no network.

Runs at a reduced working resolution (short side ~240 px) and maps labels back by nearest
neighbour: region boundaries only need to be good enough to pool CLIP features, whose grid is
far coarser. Candidate centres are restricted to the 3x3 neighbouring seed cells (the SLIC
2S x 2S search window), which keeps each iteration a few vectorised passes over the pixels.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB uint8/float(0-255) (..., 3) -> CIE Lab (D65), float32."""
    c = np.asarray(rgb, np.float32) / 255.0
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    m = np.array([[0.412453, 0.357580, 0.180423],
                  [0.212671, 0.715160, 0.072169],
                  [0.019334, 0.119193, 0.950227]], np.float32)
    xyz = (c @ m.T) / np.array([0.950456, 1.0, 1.088754], np.float32)
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    L = 116.0 * f[..., 1] - 16.0
    a = 500.0 * (f[..., 0] - f[..., 1])
    b = 200.0 * (f[..., 1] - f[..., 2])
    return np.stack([L, a, b], -1).astype(np.float32)


def _downscale(image: np.ndarray, f: int) -> np.ndarray:
    if f <= 1:
        return image.astype(np.float32)
    h, w = image.shape[0] // f, image.shape[1] // f
    return image[:h * f, :w * f].astype(np.float32).reshape(h, f, w, f, -1).mean((1, 3))


def _components(labels: np.ndarray) -> tuple[int, np.ndarray]:
    """4-connected components of equal labels."""
    h, w = labels.shape
    idx = np.arange(h * w).reshape(h, w)
    right = labels[:, :-1] == labels[:, 1:]
    down = labels[:-1] == labels[1:]
    rows = np.concatenate([idx[:, :-1][right], idx[:-1][down]])
    cols = np.concatenate([idx[:, 1:][right], idx[1:][down]])
    g = coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(h * w, h * w))
    n, comp = connected_components(g, directed=False)
    return n, comp.reshape(h, w)


def slic(image: np.ndarray, n_segments: int = 200, compactness: float = 10.0, iters: int = 5,
         work_side: int = 240, min_size_frac: float = 0.25) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) int32 region ids 0..R-1, every region 4-connected."""
    image = np.asarray(image)[..., :3]
    H, W = image.shape[:2]
    f = max(1, int(min(H, W) // max(work_side, 1)))
    lab = rgb_to_lab(_downscale(image, f))
    h, w = lab.shape[:2]
    n = h * w
    S = max(1.0, np.sqrt(n / max(n_segments, 1)))
    ny, nx = max(1, int(round(h / S))), max(1, int(round(w / S)))
    yy, xx = np.mgrid[0:h, 0:w]
    cy = np.minimum(yy * ny // h, ny - 1).ravel()
    cx = np.minimum(xx * nx // w, nx - 1).ravel()
    # seeds at cell centres
    gy = ((np.arange(ny) + 0.5) * h / ny).astype(np.float32)
    gx = ((np.arange(nx) + 0.5) * w / nx).astype(np.float32)
    cyx = np.stack(np.meshgrid(gy, gx, indexing="ij"), -1).reshape(-1, 2)
    flat = lab.reshape(-1, 3)
    clab = flat[np.clip(cyx[:, 0].astype(int), 0, h - 1) * w + np.clip(cyx[:, 1].astype(int), 0, w - 1)].copy()
    cand = np.stack([np.clip(cy + dy, 0, ny - 1) * nx + np.clip(cx + dx, 0, nx - 1)
                     for dy in (-1, 0, 1) for dx in (-1, 0, 1)])            # (9, n)
    pyx = np.stack([yy.ravel(), xx.ravel()], -1).astype(np.float32)
    wsp = (compactness / S) ** 2
    K = ny * nx
    cols = np.arange(n)
    flat_c = [np.ascontiguousarray(flat[:, j]) for j in range(3)]
    pyx_c = [np.ascontiguousarray(pyx[:, j]) for j in range(2)]
    best = cand[4]
    for _ in range(max(1, iters)):
        d = np.zeros(cand.shape, np.float32)
        for j in range(3):          # per channel: 1-D gathers stay cache friendly
            t = clab[:, j][cand]
            t -= flat_c[j]
            d += t * t
        for j in range(2):
            t = cyx[:, j][cand]
            t -= pyx_c[j]
            t *= np.float32(np.sqrt(wsp))
            d += t * t
        best = cand[d.argmin(0), cols]
        cnt = np.bincount(best, minlength=K).astype(np.float32)
        ok = cnt > 0
        for j in range(3):
            clab[ok, j] = np.bincount(best, flat[:, j], K)[ok] / cnt[ok]
        for j in range(2):
            cyx[ok, j] = np.bincount(best, pyx[:, j], K)[ok] / cnt[ok]
    labels = best.reshape(h, w)
    # enforce connectivity: small fragments join the nearest large region
    _, comp = _components(labels)
    sizes = np.bincount(comp.ravel())
    small = sizes[comp] < max(1, int(min_size_frac * n / K))
    if small.any() and not small.all():
        idx = ndimage.distance_transform_edt(small, return_distances=False, return_indices=True)
        comp = comp[idx[0], idx[1]]
    _, labels = np.unique(comp, return_inverse=True)
    labels = labels.reshape(h, w).astype(np.int32)
    ry = np.minimum(np.arange(H) // f, h - 1)
    rx = np.minimum(np.arange(W) // f, w - 1)
    return labels[ry[:, None], rx[None, :]]
