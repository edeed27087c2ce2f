"""Point-cloud geometry shared by the stages: spacing and normals, segments, kNN smoothing, pooling.

- ``point_spacing`` / ``point_normals``: per-cloud, from one cached kNN query (keyed by the xyz
  buffer), so planning and rendering dozens of views of one cloud pay for the KD-tree once;
- ``estimate_normals`` / ``geometric_segments``: surface over-segmentation (fusion's segment pooling);
- ``pool_over_segments`` / ``smooth_features``: in-place geometric priors on a ``FeatureCloud``.
"""
from __future__ import annotations

import weakref

import numpy as np
from scipy.spatial import cKDTree

from . import native
from .data import FeatureCloud, PointCloud

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
        n = _pca_normals(xyz, idx)
        n[~np.isfinite(n).all(1)] = (0, 0, 1)
        e["normals"] = n
    return e["normals"]


def estimate_normals(xyz: np.ndarray, k: int = 12, chunk: int = 200_000) -> np.ndarray:
    """Unoriented PCA normals from the k nearest points, the point itself included (uncached; the
    normals segmentation uses). :func:`point_normals` is the cached variant for rendering."""
    tree = cKDTree(xyz)
    out = np.zeros((len(xyz), 3), np.float32)
    for s in range(0, len(xyz), chunk):
        _, nn = tree.query(xyz[s:s + chunk], k=min(k, len(xyz)), workers=-1)
        out[s:s + chunk] = _pca_normals(xyz, nn)
    return out


def _pca_normals(xyz: np.ndarray, nn: np.ndarray) -> np.ndarray:
    """(M, 3) float32: smallest covariance eigenvector of each row's neighbours ``xyz[nn]``."""
    nb = xyz[nn].astype(np.float64)                           # (M, k, 3)
    nb -= nb.mean(1, keepdims=True)
    cov = np.einsum("nki,nkj->nij", nb, nb)
    _, vec = np.linalg.eigh(cov)
    return vec[:, :, 0].astype(np.float32)


def geometric_segments(cloud: PointCloud, *, k: int = 10, threshold: float = 0.05, min_size: int = 30,
                       color_weight: float = 0.5) -> np.ndarray:
    """Over-segment a cloud into surface pieces (ScanNet-segmentator style, on a kNN graph).

    Edge weight = 1 - |n_i . n_j| (+ colour difference); edges much longer than the local point
    spacing are cut so separate objects never share a segment. Returns (N,) ids, -1 = invalid point.
    """
    valid = np.flatnonzero(np.isfinite(cloud.xyz).all(1))
    seg = np.full(len(cloud), -1, np.int64)
    if len(valid) <= k:
        seg[valid] = 0
        return seg
    xyz = cloud.xyz[valid]
    normals = cloud.normals[valid] if cloud.normals is not None else estimate_normals(xyz)
    d, nn = cKDTree(xyz).query(xyz, k=k + 1, workers=-1)
    d, nn = d[:, 1:], nn[:, 1:]
    spacing = np.median(d[:, 0])
    u = np.repeat(np.arange(len(xyz)), k)
    v = nn.reshape(-1)
    keep = (d.reshape(-1) <= 4.0 * spacing) & (u < v)
    u, v = u[keep], v[keep]
    w = 1.0 - np.abs(np.sum(normals[u] * normals[v], axis=1))
    if cloud.rgb is not None and color_weight > 0:
        rgb = cloud.rgb[valid].astype(np.float32) / 255.0
        w = w + color_weight * np.linalg.norm(rgb[u] - rgb[v], axis=1) / np.sqrt(3.0)
    seg[valid] = native.segment_graph(len(xyz), u, v, w.astype(np.float32), threshold, min_size)
    return seg


def pool_over_segments(fc: FeatureCloud, segments: np.ndarray, evidence: np.ndarray, strength: float = 0.5,
                       chunk: int = 64, rows: int = 65536) -> None:
    """Add to each seen point's evidence its segment's mean evidence times ``strength`` (in place).

    A point's evidence is its fused feature scaled by how much the views back it: how many saw it
    (capped) times their agreement (the norm of the weighted mean of unit features: 1 where all
    views agree). A point few views saw, or one they argue about, takes its segment's answer; a
    point many views agree on keeps its own even when its segment says otherwise (a wire in
    front of a wall, an object the geometry did not separate). Unseen points stay unseen.
    Memory: the segment means (S, D) plus bounded chunks, never a second (N, D) array.
    """
    seen = fc.seen & (segments >= 0)
    idx = np.flatnonzero(seen)
    if len(idx) == 0 or strength <= 0:
        return
    seg = segments[idx]
    n_seg = int(seg.max()) + 1
    evidence = np.asarray(evidence, np.float32)
    ev = evidence[idx].astype(np.float64)
    size = np.maximum(np.bincount(seg, minlength=n_seg), 1).astype(np.float64)
    D = fc.features.shape[1]
    means = np.empty((n_seg, D), np.float32)
    for c in range(0, D, chunk):  # column chunks keep the temporaries small
        f = fc.features[idx, c:c + chunk].astype(np.float32)
        for j in range(f.shape[1]):
            means[:, c + j] = np.bincount(seg, weights=ev * f[:, j], minlength=n_seg) / size
    for r in range(0, len(idx), rows):
        sel = idx[r:r + rows]
        own = evidence[sel][:, None] * fc.features[sel].astype(np.float32)
        mixed = own + strength * means[seg[r:r + rows]]
        mixed /= np.maximum(np.linalg.norm(mixed, axis=1, keepdims=True), 1e-8)
        fc.features[sel] = mixed.astype(np.float16)


def smooth_features(fc: FeatureCloud, strength: float = 0.5, k: int = 8, chunk: int = 200_000) -> None:
    """Blend each seen point's feature with the mean of its k nearest seen neighbours (in place).

    A cheap geometric prior (GeoPurify/GGSD-style): neighbouring surface points should agree.
    Off by default; it holds one extra copy of the seen features (Jacobi update).
    Unseen points stay unseen.
    """
    seen = np.flatnonzero(fc.seen)
    if len(seen) <= k:
        return
    xyz = fc.cloud.xyz[seen]
    tree = cKDTree(xyz)
    feats = fc.features[seen]
    out = np.empty_like(feats)
    for s in range(0, len(seen), chunk):
        _, nn = tree.query(xyz[s:s + chunk], k=k + 1, workers=-1)
        mean = feats[nn[:, 1:]].astype(np.float32).mean(1)
        mixed = (1 - strength) * feats[s:s + chunk].astype(np.float32) + strength * mean
        mixed /= np.maximum(np.linalg.norm(mixed, axis=1, keepdims=True), 1e-8)
        out[s:s + chunk] = mixed.astype(np.float16)
    fc.features[seen] = out


def lift_weak_points(fc: FeatureCloud, evidence: np.ndarray, threshold: float, k: int = 8) -> int:
    """Points the views barely back (evidence below ``threshold``: seen once or twice by views
    that disagree, or by masks the check found wrong) take the evidence-weighted answer of their
    k nearest seen neighbours (in place; returns how many). Their own segment cannot overrule
    them when it is as small as they are: a stray label on 1-10 isolated points otherwise
    survives as a class the scene does not have. A real small object (a sign, a bicycle: several
    views agreeing) has evidence far above the threshold and keeps its own answer.
    """
    seen = fc.seen
    weak = np.flatnonzero(seen & (evidence < threshold))
    strong = np.flatnonzero(seen & (evidence >= threshold))
    if len(weak) == 0 or len(strong) < k:
        return 0
    tree = cKDTree(fc.cloud.xyz[strong].astype(np.float64))
    _, nn = tree.query(fc.cloud.xyz[weak].astype(np.float64), k=k, workers=-1)
    nb = strong[nn]                                                   # (W, k)
    w = evidence[nb].astype(np.float32)[..., None]
    mixed = (w * fc.features[nb].astype(np.float32)).sum(1)
    mixed += evidence[weak, None].astype(np.float32) * fc.features[weak].astype(np.float32)
    mixed /= np.maximum(np.linalg.norm(mixed, axis=1, keepdims=True), 1e-8)
    fc.features[weak] = mixed.astype(np.float16)
    return len(weak)
