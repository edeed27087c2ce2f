"""Per-cloud geometry the renderer needs: local point spacing (splat size) and normals (shading).

Both come from one kNN query and are cached per cloud (keyed by its xyz buffer), so planning
dozens of views of the same cloud pays for the KD-tree once.
"""
from __future__ import annotations

import weakref

import numpy as np
from scipy.spatial import cKDTree

_CACHE: dict[int, dict] = {}


def _entry(xyz: np.ndarray) -> dict:
    key = id(xyz)
    e = _CACHE.get(key)
    if e is None or e["n"] != len(xyz):
        e = {"n": len(xyz)}
        _CACHE[key] = e
        try:
            weakref.finalize(xyz, _CACHE.pop, key, None)
        except TypeError:  # pragma: no cover - non-weakrefable buffer: keep it for the process
            pass
    return e


def _knn(xyz: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    e = _entry(xyz)
    if "knn" not in e or e["knn"][0].shape[1] < k:
        finite = np.isfinite(xyz).all(1)
        pts = np.where(finite[:, None], xyz, 0.0).astype(np.float64)
        k_eff = int(min(k + 1, max(len(xyz), 1)))
        tree = cKDTree(pts[finite]) if finite.any() else None
        dist = np.full((len(xyz), k_eff), np.inf, np.float32)
        idx = np.zeros((len(xyz), k_eff), np.int64)
        if tree is not None:
            d, i = tree.query(pts[finite], k=k_eff, workers=-1)
            d = d.reshape(-1, k_eff); i = i.reshape(-1, k_eff)
            back = np.flatnonzero(finite)
            dist[finite] = d
            idx[finite] = back[np.minimum(i, len(back) - 1)]
        e["knn"] = (dist[:, 1:], idx[:, 1:])
    d, i = e["knn"]
    return d[:, :k], i[:, :k]


def point_spacing(xyz: np.ndarray, k: int = 6) -> np.ndarray:
    """Per-point spacing (N,) float32: mean distance to the k nearest neighbours, outliers clipped.

    Isolated points would otherwise draw huge discs; the clip keeps splats at most 3x the
    95th-percentile spacing.
    """
    e = _entry(xyz)
    if "spacing" not in e:
        d, _ = _knn(xyz, k)
        d = np.where(np.isfinite(d), d, np.nan)
        s = np.nanmean(d, axis=1) if d.shape[1] else np.full(len(xyz), np.nan)
        good = np.isfinite(s)
        if good.any():
            hi = 3.0 * np.percentile(s[good], 95)
            s = np.clip(np.where(good, s, np.nanmedian(s)), 0, max(hi, 1e-6))
        else:
            s = np.zeros(len(xyz))
        e["spacing"] = s.astype(np.float32)
    return e["spacing"]


def point_normals(xyz: np.ndarray, k: int = 12) -> np.ndarray:
    """Unoriented unit normals (N, 3) from the smallest eigenvector of each kNN covariance."""
    e = _entry(xyz)
    if "normals" not in e:
        _, idx = _knn(xyz, k)
        nb = xyz[idx].astype(np.float64)                      # (N, k, 3)
        nb -= nb.mean(1, keepdims=True)
        cov = np.einsum("nki,nkj->nij", nb, nb)
        _, vec = np.linalg.eigh(cov)
        n = vec[:, :, 0].astype(np.float32)
        n[~np.isfinite(n).all(1)] = (0, 0, 1)
        e["normals"] = n
    return e["normals"]
