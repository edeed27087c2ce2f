"""Fusion: per-view 2D features -> one feature per point.

Streaming passes over views, so memory is the fused result plus a constant:
  1. ``Visibility`` per view (point ids, pixels, geometric weights; small, cached on disk) and
     per-point weight totals per granularity;
  2. features sampled at the visible pixels, accumulated as a running weighted mean into an fp16
     (N, D) array in the native extension;
  3. each view's 2D masks scored against the other views (a wrong mask is wrong as a whole);
  4. the accumulation again, contradicted masks discounted.
Then evidence pooling over geometric segments (the geometry itself is pc_ovseg.geometry).
Balancing ("sample-balanced", as in OpenUrban3D): every granularity that saw a point gets the
same total weight, so a point seen in 40 close-ups and one overview is not decided by the
close-ups alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from . import native
from .data import FeatureCloud, PointCloud, View, ViewFeatures
from .geometry import geometric_segments, lift_weak_points, pool_over_segments, smooth_features


@dataclass
class FusionConfig:
    """How observations are weighted, checked and combined; every part can be switched off."""

    angle: bool = True            # |cos| between the point normal and the viewing ray
    distance: bool = True         # closer observations see more detail: 1 / (1 + z / median z)
    depth_agreement: bool = True  # exp(-(dz / sigma)^2), sigma = depth_sigma_rel * z + 1 cm
    depth_sigma_rel: float = 0.05
    border: float = 0.05          # weight ramps from 0.25 to 1 over this fraction of the image edge
    not_drawn: float = 0.1        # weight when the pixel shows another point (index map) than this one
    balance: str = "granularity"  # "granularity" (sample-balanced) or "none" (plain weighted mean)
    balance_power: float = 0.5    # 1 = each granularity gets equal say; 0 = plain mean; between,
                                  # a granularity's say grows with the square root of its evidence
    segments: float = 0.5         # pool evidence over geometric segments: the segment's mean
                                  # evidence counts this much next to the point's own (0 = off)
    evidence_cap: float = 10.0    # a point's evidence: views that saw it (up to this) x agreement
    mask_check: float = 2.0       # 0 = off; else a 2D mask (connected blob of a view's regions)
                                  # whose features the other views contradict loses its vote,
                                  # softly from this many robust deviations below the typical mask
    mask_sigma: float = 0.1       # smallest deviation, as a fraction of the feature contrast
                                  # (see _contrast): masks that all agree are all kept
    mask_points: float = 10.0     # masks with less other evidence than this many points are
                                  # judged leniently (score shrunk toward the typical good mask)
    weak_evidence: float = 1.0    # points with less evidence than this (one agreeing view)
                                  # take their k strong neighbours' answer (0 = off): no stray classes
    weak_k: int = 8
    smoothing: float = 0.0        # 0 = off; else blend with the kNN mean of fused features
    smoothing_k: int = 8


@dataclass
class Visibility:
    """What fusion keeps of a view: which points it saw, where, and how much to trust each."""

    name: str
    granularity: str
    point_ids: np.ndarray   # (M,) int64
    pixels: np.ndarray      # (M, 2) int32 (row, col)
    weights: np.ndarray     # (M,) float32
    image_hw: tuple[int, int] = (0, 0)
    own: np.ndarray | None = None   # (M,) bool: the pixel shows this point itself (None = unknown);
                                    # a point drawn over by a neighbour reads the neighbour's mask

    def save(self, path) -> None:
        """Ids and pixels in the narrowest exact dtype (int32 / uint16 where they fit: 12 bytes an
        observation instead of 20); load restores the working dtypes, so fusion sees the same values."""
        ids, pix = self.point_ids, self.pixels
        if len(ids) and int(ids.max()) < 2**31:
            ids = ids.astype(np.int32)
        if len(pix) and 0 <= int(pix.min()) and int(pix.max()) < 2**16:
            pix = pix.astype(np.uint16)
        own = {} if self.own is None else {"own": np.packbits(self.own)}
        np.savez(path, point_ids=ids, pixels=pix, weights=self.weights, **own,
                 meta=np.array([self.name, self.granularity, str(self.image_hw[0]), str(self.image_hw[1])]))

    @classmethod
    def load(cls, path) -> "Visibility":
        with np.load(path, allow_pickle=False) as z:
            name, gran, h, w = (str(s) for s in z["meta"])
            ids = z["point_ids"].astype(np.int64)
            own = np.unpackbits(z["own"], count=len(ids)).astype(bool) if "own" in z else None
            return cls(name, gran, ids, z["pixels"].astype(np.int32), z["weights"], (int(h), int(w)), own)


def view_visibility(view: View, cloud: PointCloud, cfg: FusionConfig | None = None) -> Visibility:
    """Geometric weight of each visible point of ``view`` (visibility itself was decided by views)."""
    cfg = cfg or FusionConfig()
    ids = np.asarray(view.point_ids, np.int64)
    pix = np.asarray(view.pixels, np.int32)
    w = np.ones(len(ids), np.float32)
    own = None
    if view.index is not None and view.index.size:
        own = view.index[pix[:, 0], pix[:, 1]] == ids if len(ids) else np.zeros(0, bool)
    if len(ids):
        cam = view.camera
        xyz = cloud.xyz[ids].astype(np.float64)
        _, z = cam.project(xyz)
        z = np.maximum(z, 1e-6)
        if cfg.angle and cloud.normals is not None:
            ray = xyz - cam.center
            ray /= np.maximum(np.linalg.norm(ray, axis=1, keepdims=True), 1e-9)
            cos = np.abs(np.sum(ray * cloud.normals[ids], axis=1))
            w *= np.clip(cos, 0.1, 1.0).astype(np.float32)
        if cfg.distance:
            w *= (1.0 / (1.0 + z / max(np.median(z), 1e-6))).astype(np.float32) * 2.0
        if cfg.depth_agreement and view.depth is not None and view.depth.size:
            d = view.depth[pix[:, 0], pix[:, 1]].astype(np.float64)
            ok = d > 0
            sigma = cfg.depth_sigma_rel * z + 0.01
            dz = np.where(ok, (d - z) / sigma, 0.0)
            w *= np.exp(-np.minimum(dz * dz, 50.0)).astype(np.float32)
        if cfg.not_drawn < 1 and own is not None:
            # a visible point whose pixel is drawn by a neighbour sees the neighbour's feature:
            # trust views where the point itself is what the 2D model saw
            w *= np.where(own, 1.0, cfg.not_drawn).astype(np.float32)
        if cfg.border > 0:
            H, W = view.hw
            edge = np.minimum.reduce([pix[:, 0], pix[:, 1], H - 1 - pix[:, 0], W - 1 - pix[:, 1]]).astype(np.float32)
            ramp = cfg.border * min(H, W)
            w *= 0.25 + 0.75 * np.clip(edge / max(ramp, 1.0), 0.0, 1.0)
    return Visibility(view.name, view.granularity, ids, pix, w.astype(np.float32), view.hw, own)


class FeatureFusion:
    """Streaming, memory-bounded fusion of view features onto ``num_points`` points.

    Call ``add_weights`` for every view first (pass 1), then ``fuse_views`` with a function that
    yields every view's (Visibility, ViewFeatures) again on each call (passes 2-4: accumulate;
    score each 2D mask against the other views; accumulate again without the masks they
    contradict), then ``result``. With ``balance="none"`` pass 1 may be skipped.
    """

    rows = 32768  # visible points sampled per step: caps the per-view temporaries at ~rows x D
    check_points = 64  # points per 2D mask that the mask check compares with the other views
    min_reliability = 1e-3  # what is left of a contradicted mask's vote

    def __init__(self, num_points: int, dim: int, cfg: FusionConfig | None = None):
        self.cfg = cfg or FusionConfig()
        self.n, self.dim = int(num_points), int(dim)
        self.acc = np.zeros((self.n, self.dim), np.float16)
        self.wsum = np.zeros(self.n, np.float32)
        self.count = np.zeros(self.n, np.uint16)
        self.groups: dict[str, int] = {}
        self.totals = np.zeros((self.n, 0), np.float32)
        self.support: np.ndarray | None = None      # sum of mask reliabilities, after the check
        self._mask_scores: dict = {}  # view key -> (mask ids, mean score, evidence mass)
        self._reliability: tuple[float, float] | None = None

    def _group(self, name: str) -> int:
        if name not in self.groups:
            self.groups[name] = len(self.groups)
            self.totals = np.ascontiguousarray(np.pad(self.totals, ((0, 0), (0, 1))))
        return self.groups[name]

    def add_weights(self, vis: Visibility) -> None:
        if self.cfg.balance == "none":
            return
        g = self._group(vis.granularity)
        native.fuse_add_weights(self.totals, vis.point_ids, vis.weights, g)

    def balanced_weights(self, vis: Visibility) -> np.ndarray:
        if self.cfg.balance == "none" or self.totals.shape[1] == 0:
            return vis.weights
        g = self.groups[vis.granularity]
        tot = self.totals[vis.point_ids, g]
        return (vis.weights / np.maximum(tot, 1e-12) ** self.cfg.balance_power).astype(np.float32)

    def fuse_views(self, views: Callable[[], Iterable[tuple[Visibility, ViewFeatures]]]) -> None:
        """Passes 2-4 over ``views()`` (called once per pass; views stream from memory or cache)."""
        for vis, feats in views():
            self.add(vis, feats)
        if self.cfg.mask_check <= 0:
            return
        for k, (vis, feats) in enumerate(views()):  # views are known by their position
            self.check(vis, feats, k)
        if not self.reweigh():
            return
        for k, (vis, feats) in enumerate(views()):
            self.add(vis, feats, k)

    def add(self, vis: Visibility, feats: ViewFeatures, key=None) -> None:
        """Accumulate one view (with its masks' reliabilities, by ``key``, once ``reweigh`` ran)."""
        if feats.dim != self.dim:
            raise ValueError(f"view {vis.name}: feature dim {feats.dim} != {self.dim}")
        if len(vis.point_ids) == 0:
            return
        w_all = self.balanced_weights(vis)
        if self._reliability is not None:
            rho = self._mask_reliability(vis, feats, key)
            w_all = (w_all * rho).astype(np.float32)
            self.support[vis.point_ids] += rho  # a view's point ids are unique
        for s in range(0, len(vis.point_ids), self.rows):  # bounded (rows, D) temporaries
            e = s + self.rows
            f = feats.sample(vis.pixels[s:e])
            w = np.where(np.any(f != 0, axis=1), w_all[s:e], 0.0).astype(np.float32)  # no feature, no vote
            native.fuse_accumulate(self.acc, self.wsum, self.count, vis.point_ids[s:e], f, w)

    def check(self, vis: Visibility, feats: ViewFeatures, key) -> None:
        """Score each 2D mask of the view by how well the *other* views agree with it.

        A 2D model errs per mask (a whole superpixel or SAM mask gets the wrong class), so the
        unit of trust is the mask: its points' features are compared (cosine) with the
        leave-this-view-out fused mean, weighted by how much other evidence each point has.
        Points only this view saw carry no weight; masks without any are left alone.
        """
        units = mask_units(feats)
        if units is None or len(vis.point_ids) == 0:
            return
        # a mask is judged on at most ``check_points`` of its points (random, fixed): the check
        # then costs a fraction of an accumulation pass
        uid_all = units[vis.pixels[:, 0], vis.pixels[:, 1]]
        perm = np.random.default_rng(len(uid_all)).permutation(len(uid_all))
        order = perm[np.argsort(uid_all[perm], kind="stable")]
        u_sorted = uid_all[order]
        rank = np.arange(len(order)) - np.searchsorted(u_sorted, u_sorted, side="left")
        pick = np.sort(order[rank < self.check_points])
        uid = uid_all[pick]
        w_full = self.balanced_weights(vis)
        w_all = w_full[pick]
        point_ids, pixels = vis.point_ids[pick], vis.pixels[pick]
        score = np.zeros(len(uid), np.float32)
        other = np.zeros(len(uid), np.float32)
        for s in range(0, len(uid), self.rows):
            e = s + self.rows
            ids = point_ids[s:e]
            f = feats.sample(pixels[s:e])
            w = np.where(np.any(f != 0, axis=1), w_all[s:e], 0.0).astype(np.float32)
            W = self.wsum[ids]
            rest = self.acc[ids].astype(np.float32) * W[:, None] - w[:, None] * f  # sum of the others
            norm = np.linalg.norm(rest, axis=1)
            score[s:e] = np.einsum("ij,ij->i", rest, f) / np.maximum(norm, 1e-12)
            other[s:e] = np.where((norm > 1e-6) & (w > 0), np.maximum(W - w, 0.0), 0.0)
        ok = (uid >= 0) & (other > 0)
        if not ok.any():
            return
        keys, inv = np.unique(uid[ok], return_inverse=True)
        mean = (np.bincount(inv, weights=other[ok] * score[ok], minlength=len(keys))
                / np.maximum(np.bincount(inv, weights=other[ok], minlength=len(keys)), 1e-12))
        # a mask's say in the statistics is the other evidence over all its points, not the sample
        other_full = np.maximum(self.wsum[vis.point_ids] - w_full, 0.0) * (w_full > 0)
        pos = np.clip(np.searchsorted(keys, uid_all), 0, len(keys) - 1)
        hit = (keys[pos] == uid_all) & (other_full > 0)
        mass = np.bincount(pos[hit], weights=other_full[hit], minlength=len(keys))
        self._mask_scores[key] = (keys, mean.astype(np.float32), mass.astype(np.float32),
                                  float(np.median(other_full[hit])) if hit.any() else 0.0)

    def reweigh(self) -> bool:
        """Turn mask scores into reliabilities and reset the accumulator for the final pass.

        A mask scoring up to ``mask_check`` robust deviations (1.4826 MAD, evidence-weighted)
        below the typical good mask (the median of the better half) keeps its full vote; below
        that its weight falls as exp(-(excess deviations)), to ``min_reliability`` at least. The
        smallest deviation scales with the feature contrast (one-hot labels and CLIP embeddings
        have very different typical cosines). Returns False when nothing was scored.
        """
        if not self._mask_scores:
            return False
        scores = np.concatenate([m for _, m, _, _ in self._mask_scores.values()])
        mass = np.concatenate([w for _, _, w, _ in self._mask_scores.values()])
        # the reference is the better half of the masks (its median and MAD): with half of all
        # masks wrong, the plain median would sit between right and wrong and condemn neither
        up = scores >= _weighted_quantile(scores, mass, 0.5)
        med = _weighted_quantile(scores[up], mass[up], 0.5)
        mad = _weighted_quantile(np.abs(scores[up] - med), mass[up], 0.5)
        # a mask is judged on about ``mask_points`` typical points' worth of other evidence; with
        # less, its score shrinks toward the reference (a 2-pixel mask is not condemned by 2 points)
        point = float(np.median([p for _, _, _, p in self._mask_scores.values()]))
        prior = self.cfg.mask_points * point
        for k, (keys, mean, m, p) in self._mask_scores.items():
            self._mask_scores[k] = (keys, ((m * mean + prior * med) / (m + prior)).astype(np.float32), m, p)
        floor = self.cfg.mask_sigma * self._contrast()
        self._reliability = (float(med), float(max(1.4826 * mad, floor, 1e-4)))
        self.acc[:] = 0
        self.wsum[:] = 0
        self.count[:] = 0
        self.support = np.zeros(self.n, np.float32)
        return True

    def _contrast(self, pairs: int = 20000) -> float:
        """How far apart features of different things are in this feature space: 1 - the 5th
        percentile cosine between random pairs of fused points (about 1 for one-hot labels,
        much less for CLIP embeddings, whose unrelated patches still share a large common
        component). The mask check's smallest deviation is measured in these units."""
        seen = np.flatnonzero(self.wsum > 0)
        if len(seen) < 2:
            return 1.0
        rng = np.random.default_rng(0)
        a = self.acc[rng.choice(seen, pairs)].astype(np.float32)
        b = self.acc[rng.choice(seen, pairs)].astype(np.float32)
        a /= np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        b /= np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
        return float(np.clip(1.0 - np.quantile(np.einsum("ij,ij->i", a, b), 0.05), 1e-3, 2.0))

    def _mask_reliability(self, vis: Visibility, feats: ViewFeatures, key) -> np.ndarray:
        rho = np.ones(len(vis.point_ids), np.float32)
        scored = self._mask_scores.get(key)
        units = mask_units(feats) if scored is not None else None
        if units is None:
            return rho
        keys, mean, _, _ = scored
        uid = units[vis.pixels[:, 0], vis.pixels[:, 1]]
        pos = np.clip(np.searchsorted(keys, uid), 0, len(keys) - 1)
        hit = keys[pos] == uid
        med, sigma = self._reliability
        z = (mean[pos[hit]] - med) / sigma
        # a contradicted mask keeps a trace of its vote: a point only it saw stays "seen" (with
        # next to no support), never turns into an unseen point
        rho[hit] = np.maximum(np.exp(np.minimum(z + self.cfg.mask_check, 0.0)), self.min_reliability)
        return rho

    def result(self, cloud: PointCloud, *, encoder: str = "", class_names=None, meta=None) -> FeatureCloud:
        # the norm of a weighted mean of unit features is 1 where every view agreed and falls as
        # they disagree: points the views argue about lean more on their segment (see below)
        agreement = native.normalize_rows_half(self.acc)
        weight = self.wsum.copy()
        if self.cfg.balance != "none" and self.totals.shape[1]:
            weight = self.totals.sum(1) * (self.wsum > 0)  # confidence = geometric evidence
        fc = FeatureCloud(cloud, self.acc, weight.astype(np.float32), self.count, encoder, class_names,
                          dict(meta or {}, fusion=vars(self.cfg).copy()))
        if self.cfg.segments > 0:
            views = self.count if self.support is None else self.support  # masks found wrong count less
            evidence = np.minimum(views, self.cfg.evidence_cap).astype(np.float32) * agreement
            pool_over_segments(fc, geometric_segments(cloud), evidence, self.cfg.segments)
            if self.cfg.weak_evidence > 0:
                lift_weak_points(fc, evidence, self.cfg.weak_evidence, self.cfg.weak_k)
        if self.cfg.smoothing > 0:
            smooth_features(fc, self.cfg.smoothing, self.cfg.smoothing_k)
        return fc


def fuse(cloud: PointCloud, items: Iterable[tuple[Visibility, ViewFeatures]], dim: int, *,
         cfg: FusionConfig | None = None, encoder: str = "", class_names=None) -> FeatureCloud:
    """Convenience for in-memory inputs (the pipeline streams from its cache instead)."""
    items = list(items)
    fusion = FeatureFusion(len(cloud), dim, cfg)
    for vis, _ in items:
        fusion.add_weights(vis)
    fusion.fuse_views(lambda: items)
    return fusion.result(cloud, encoder=encoder, class_names=class_names)


def mask_units(feats: ViewFeatures) -> np.ndarray | None:
    """(H, W) id of the 4-connected blob of equal region id at each pixel (-1 = no region): the
    2D model's separate decisions (a label map's class ids repeat across blobs). None when the
    view's features have no region map (dense features only)."""
    r = feats.regions
    if r is None:
        return None
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    r = np.asarray(r)
    H, W = r.shape
    idx = np.arange(H * W, dtype=np.int64).reshape(H, W)
    same_h = (r[:, 1:] == r[:, :-1]) & (r[:, 1:] >= 0)
    same_v = (r[1:, :] == r[:-1, :]) & (r[1:, :] >= 0)
    u = np.concatenate([idx[:, :-1][same_h], idx[:-1, :][same_v]])
    v = np.concatenate([idx[:, 1:][same_h], idx[1:, :][same_v]])
    graph = coo_matrix((np.ones(len(u), np.int8), (u, v)), shape=(H * W, H * W))
    _, lab = connected_components(graph, directed=False)
    return np.where(r >= 0, lab.reshape(H, W), -1).astype(np.int64)


def _weighted_quantile(x: np.ndarray, w: np.ndarray, q: float) -> float:
    order = np.argsort(x)
    cw = np.cumsum(w[order])
    return float(x[order][min(np.searchsorted(cw, q * cw[-1]), len(x) - 1)])


# --- compact storage ---------------------------------------------------------------------------

def fit_basis(samples: np.ndarray, k: int) -> np.ndarray:
    """(D, k) float32: the top ``k`` right singular vectors of fused feature rows (uncentred, so
    dot products with text in the subspace are the full ones minus what the discarded directions
    held). Fitted on fused features, never on a view's: the basis is the scene's, not a frame's."""
    x = np.asarray(samples, np.float32)
    x = x[np.abs(x).sum(1) > 0]
    if len(x) == 0:
        raise ValueError("no seen points to fit a feature basis on")
    k = int(min(k, x.shape[1]))
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return np.ascontiguousarray(vt[:k].T, np.float32)


def sample_rows(features: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Up to ``n`` seen rows (deterministic), what a basis is fitted on."""
    seen = np.flatnonzero(np.abs(features).sum(1) > 0)
    if len(seen) > n:
        seen = np.sort(np.random.default_rng(seed).choice(seen, n, replace=False))
    return np.asarray(features[seen], np.float32)


def compress(fc, basis: np.ndarray):
    """``fc`` with its features as coordinates in ``basis`` (fp16; unseen rows stay zero); text
    queries project into the same basis (QueryEngine), so heatmaps and labels keep their meaning."""
    from dataclasses import replace
    if fc.basis is not None:
        raise ValueError("features are compressed already")
    out = np.zeros((len(fc.features), basis.shape[1]), np.float16)
    for a in range(0, len(out), 262_144):   # blocks: never a second N x D float32 copy
        out[a:a + 262_144] = np.asarray(fc.features[a:a + 262_144], np.float32) @ basis
    return replace(fc, features=out, basis=np.asarray(basis, np.float32),
                   meta={**fc.meta, "compressed": {"from": int(basis.shape[0]), "to": int(basis.shape[1])}})
