"""3D instances: class-agnostic proposals from 2D masks across views, one feature per instance.

Every view's masks (SAM, superpixels, oracle instance maps, ...) are read at the pixels of the
points the view sees (the views stage's visibility, the same ``point_ids``/``pixels`` fusion
uses). The geometry is over-segmented into superpoints (pc_ovseg.geometry), which are then
merged by view consensus, as MaskClustering and Open3DIS do: two clusters are joined when, over
the views that observe both, they fall in the same mask in at least ``threshold`` of them. The
thresholds go down round by round and the statistics are recomputed on the merged clusters, so a
large object is judged as a whole once its parts have joined. A cluster is observed by a view
when enough of its visible points are there and most of them lie in one mask; its score is how
well its masks fit it (mean IoU of the cluster's visible points with its mask's), so fragments of
an object, whose masks are much bigger than they are, rank low.

Proposals keep their supporting views (best first). A per-point instance id file made elsewhere
(Mask3D, ...) enters through :func:`from_ids`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np

from .data import FeatureCloud, PointCloud


@dataclass
class ProposalConfig:
    """How per-view masks become 3D instances (defaults measured by scripts/bench_instances.py)."""

    thresholds: tuple = (0.9, 0.8, 0.7, 0.6, 0.5)  # consensus needed to merge, round by round
    min_together: int = 4         # views that put both in one mask, at least, before a pair can merge
    min_visible: int = 8          # visible points for a cluster to count as observed by a view
    min_share: float = 0.6        # ... and this share of them in one mask
    min_points: int = 50          # smallest instance kept
    min_views: int = 2            # views an instance is observed in, at least
    superpoint_threshold: float = 0.05   # geometric_segments' merge threshold (smaller = finer)
    superpoint_min_size: int = 20
    keep_views: int = 20          # supporting views stored per instance
    mask_cut: float = 0.5         # superpoints are cut where masks agree less than this (0 = off)
    knn: int = 8                  # neighbours of the point graph the cut is made on
    link_min_same: int = 2        # views that must put both ends of a link in one mask
    strict_links: bool = True     # a link never seen in one mask is kept only between points no mask covers
    absorb: float = 0.5           # unassigned points join the instance of this share of their masks (0 = off)


@dataclass
class MaskObservation:
    """One view's masks on the points it sees: the mask id under each visible point (-1 none)."""

    name: str
    point_ids: np.ndarray
    mask_ids: np.ndarray


def mask_observation(vis, regions: np.ndarray) -> MaskObservation:
    """A view's masks (an (H, W) region map, -1 = none) read at its visible points' pixels, kept
    only where the pixel shows the point itself (``vis.own``, from the views stage's index map):
    a point drawn over by a neighbour would read the neighbour's mask and glue the two objects."""
    ids = np.asarray(vis.point_ids, np.int64)
    m = np.asarray(regions)[vis.pixels[:, 0], vis.pixels[:, 1]].astype(np.int64)
    own = getattr(vis, "own", None)
    if own is not None:
        ids, m = ids[own], m[own]
    return MaskObservation(vis.name, ids, m)


@dataclass
class Instances:
    """Instances of one cloud: a partition of (some of) its points, with scores and views.

    ``ids[i]`` is point i's instance (-1 = none); instance k has ``scores[k]``, its supporting
    ``views[k]`` (view names, best first) and, once computed, ``features[k]`` (L2-normalised, in
    the space of the fused features: query it with text like points).
    """

    ids: np.ndarray
    scores: np.ndarray
    views: list = field(default_factory=list)
    features: np.ndarray | None = None
    encoder: str = ""
    class_names: list | None = None
    meta: dict = field(default_factory=dict)
    box_min: np.ndarray | None = None     # (K, 3) world boxes when stored (instances merged over tiles)
    box_max: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.scores)

    def members(self, k: int) -> np.ndarray:
        return np.flatnonzero(self.ids == k)

    def member_lists(self) -> list[np.ndarray]:
        order = np.argsort(self.ids, kind="stable")
        sid = self.ids[order]
        starts = np.searchsorted(sid, np.arange(len(self) + 1))
        return [order[starts[k]:starts[k + 1]] for k in range(len(self))]

    def boxes(self, cloud: PointCloud | None = None) -> np.ndarray:
        """(K, 2, 3) world-coordinate axis-aligned boxes (min, max): stored ones (instances merged
        over tiles keep theirs), else from ``cloud``."""
        if self.box_min is not None:
            return np.stack([self.box_min, self.box_max], 1)
        out = np.zeros((len(self), 2, 3), np.float64)
        for k, m in enumerate(self.member_lists()):
            if len(m):
                p = cloud.xyz[m].astype(np.float64) + cloud.origin
                out[k] = p.min(0), p.max(0)
        return out

    def save(self, path) -> None:
        import json

        from .store import atomic_write
        arrays = {"ids": self.ids.astype(np.int32), "scores": self.scores.astype(np.float32),
                  "views": np.array(json.dumps(self.views)), "encoder": np.array(self.encoder),
                  "meta": np.array(json.dumps(self.meta, default=str))}
        if self.features is not None:
            arrays["features"] = self.features.astype(np.float16)
        if self.class_names:
            arrays["class_names"] = np.array(self.class_names)
        if self.box_min is not None:
            arrays["box_min"], arrays["box_max"] = self.box_min, self.box_max
        with atomic_write(path) as tmp:
            np.savez_compressed(tmp, **arrays)

    @classmethod
    def load(cls, path) -> "Instances":
        import json

        from .errors import InputError, check_input_path
        p = check_input_path(path)
        try:
            with np.load(p, allow_pickle=False) as z:
                if "ids" not in z or "scores" not in z:
                    raise InputError(p, "not an instances file (no ids/scores; written by `pc-ovseg instances`)")
                ids, scores = z["ids"].astype(np.int64), z["scores"].astype(np.float32)
                feats = z["features"] if "features" in z else None
                names = [str(s) for s in z["class_names"]] if "class_names" in z else None
                views = json.loads(str(z["views"])) if "views" in z else []
                meta = json.loads(str(z["meta"])) if "meta" in z else {}
                enc = str(z["encoder"]) if "encoder" in z else ""
                boxes = (z["box_min"], z["box_max"]) if "box_min" in z else None
        except (OSError, ValueError) as exc:
            raise InputError(p, f"cannot read instances: {exc}") from None
        if len(ids) and int(ids.max()) >= len(scores):
            raise InputError(p, f"instance id {int(ids.max())} but only {len(scores)} scores")
        return cls(ids, scores, views, feats, enc, names, meta, *(boxes or (None, None)))


# -- proposals -------------------------------------------------------------------------------------

@dataclass
class _ViewStats:
    name: str
    sp: np.ndarray        # superpoints seen (unique)
    sp_count: np.ndarray  # their visible points
    t_sp: np.ndarray      # (superpoint, mask, points) triples of masked visible points
    t_mask: np.ndarray
    t_count: np.ndarray
    mask_size: np.ndarray  # visible points per mask id


def _view_stats(obs: MaskObservation, sp: np.ndarray) -> _ViewStats | None:
    ids = np.asarray(obs.point_ids, np.int64)
    m = np.asarray(obs.mask_ids, np.int64)
    s = sp[ids]
    ok = s >= 0
    s, m = s[ok], m[ok]
    if len(s) == 0:
        return None
    u, c = np.unique(s, return_counts=True)
    hit = m >= 0
    if not hit.any():
        return None
    _, m_dense = np.unique(m[hit], return_inverse=True)   # compact mask ids per view
    M = int(m_dense.max()) + 1
    key, cnt = np.unique(s[hit] * M + m_dense, return_counts=True)
    return _ViewStats(obs.name, u, c.astype(np.int64), key // M, key % M, cnt.astype(np.int64),
                      np.bincount(m_dense, minlength=M).astype(np.int64))


def _observe(st: _ViewStats, lab: np.ndarray, C: int, cfg: ProposalConfig):
    """Clusters this view observes: (cluster, mask, IoU of the cluster's visible part with the mask)."""
    nvis = np.bincount(lab[st.sp], weights=st.sp_count, minlength=C)
    cc = lab[st.t_sp]
    M = len(st.mask_size)
    key, inv = np.unique(cc * M + st.t_mask, return_inverse=True)
    cnt = np.bincount(inv, weights=st.t_count)
    kc, km = key // M, key % M
    order = np.lexsort((-cnt, kc))
    first = order[np.r_[True, kc[order][1:] != kc[order][:-1]]]
    c, m, best = kc[first], km[first], cnt[first]
    nv = nvis[c]
    ok = (nv >= cfg.min_visible) & (best >= cfg.min_share * nv)
    c, m, best, nv = c[ok], m[ok], best[ok], nv[ok]
    iou = best / (nv + st.mask_size[m] - best)
    return c, m, iou


def _pairs_together(c: np.ndarray, m: np.ndarray) -> np.ndarray:
    """(a, b) with a < b for every two observed clusters sharing a mask in one view."""
    order = np.lexsort((c, m))
    c, m = c[order], m[order]
    starts = np.flatnonzero(np.r_[True, m[1:] != m[:-1]])
    ends = np.r_[starts[1:], len(m)]
    out = []
    for a, b in zip(starts, ends):
        k = b - a
        if k < 2:
            continue
        i, j = np.triu_indices(k, 1)
        out.append(np.stack([c[a + i], c[a + j]], 1))
    return np.concatenate(out) if out else np.zeros((0, 2), np.int64)


def _split_by_masks(cloud: PointCloud, sp: np.ndarray, observations: list[MaskObservation],
                    cfg: ProposalConfig) -> np.ndarray:
    """Superpoints cut where the views' masks disagree: a kNN edge inside a superpoint is kept
    unless, over the views whose masks cover both ends, they are in different masks more often
    than not (a pillow the geometry joined to its sofa is separated by the masks); the units
    are the connected pieces. Edges between superpoints are never followed here: joining is the
    consensus rounds' decision, made on whole clusters."""
    from scipy.spatial import cKDTree

    valid = np.flatnonzero(sp >= 0)
    if len(valid) < 2 or cfg.mask_cut <= 0:
        return sp
    k = min(cfg.knn, len(valid) - 1)
    d, nn = cKDTree(cloud.xyz[valid]).query(cloud.xyz[valid], k=k + 1, workers=-1)
    d, nn = d[:, 1:], nn[:, 1:]
    u = np.repeat(valid, k)
    v = valid[nn.reshape(-1)]
    keep = (u < v) & (sp[u] == sp[v]) & (d.reshape(-1) <= 4.0 * np.median(d[:, 0]))
    u, v = u[keep], v[keep]
    covis = np.zeros(len(u), np.int32)
    same = np.zeros(len(u), np.int32)
    m = np.full(len(sp), -1, np.int64)
    masked = np.zeros(len(sp), np.int32)
    for o in observations:
        m[o.point_ids] = o.mask_ids
        masked[o.point_ids] += o.mask_ids >= 0
        mu, mv = m[u], m[v]
        both = (mu >= 0) & (mv >= 0)
        covis += both
        same += both & (mu == mv)
        m[o.point_ids] = -1
    # never seen in one mask together: linked only when both are masked somewhere or neither is
    # (a point no mask ever covers is not part of the object it touches)
    link = np.where(covis > 0, (same >= cfg.mask_cut * covis) & (same >= cfg.link_min_same),
                    (masked[u] == 0) & (masked[v] == 0) if cfg.strict_links else (masked[u] > 0) == (masked[v] > 0))
    u, v = u[link], v[link]
    comp = _union(len(sp), np.stack([u, v], 1))
    out = np.where(sp >= 0, comp, -1)
    _, out[sp >= 0] = np.unique(out[sp >= 0], return_inverse=True)
    return out


def _absorb(ids: np.ndarray, observations: list[MaskObservation], K: int, share: float) -> np.ndarray:
    """Points left out of every instance (pieces too small to be judged on their own) join the
    instance their masks belong to: in each view, a mask whose assigned points are mostly one
    instance votes for it on the mask's unassigned points; a point joins the instance that gets
    at least ``share`` of its masked observations."""
    ids = ids.copy()
    free = ids < 0
    n_masked = np.zeros(len(ids), np.int64)
    votes = []
    for o in observations:
        ok = o.mask_ids >= 0
        pid, mid = np.asarray(o.point_ids, np.int64)[ok], np.asarray(o.mask_ids, np.int64)[ok]
        if len(pid) == 0:
            continue
        uniq, minv = np.unique(mid, return_inverse=True)
        own = ids[pid]
        a = own >= 0
        best = np.full(len(uniq), -1, np.int64)
        if a.any():
            kk, cnt = np.unique(minv[a] * K + own[a], return_counts=True)
            km, ki = kk // K, kk % K
            order = np.lexsort((-cnt, km))
            first = order[np.r_[True, km[order][1:] != km[order][:-1]]]
            tot = np.bincount(minv[a], minlength=len(uniq))
            good = cnt[first] >= 0.5 * tot[km[first]]
            best[km[first][good]] = ki[first][good]
        f = free[pid]
        n_masked[pid[f]] += 1
        v = best[minv[f]]
        votes.append(pid[f][v >= 0] * K + v[v >= 0])
    if not votes:
        return ids
    kk, cnt = np.unique(np.concatenate(votes), return_counts=True)
    p, k = kk // K, kk % K
    order = np.lexsort((-cnt, p))
    first = order[np.r_[True, p[order][1:] != p[order][:-1]]] if len(p) else order
    p, k, cnt = p[first], k[first], cnt[first]
    ok = cnt >= share * n_masked[p]
    ids[p[ok]] = k[ok]
    return ids


def _union(C: int, pairs: np.ndarray) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    g = coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(C, C))
    return connected_components(g, directed=False)[1]


def propose(cloud: PointCloud, observations: Iterable[MaskObservation], cfg: ProposalConfig | None = None, *,
            superpoints: np.ndarray | None = None, progress: bool = False) -> Instances:
    """Class-agnostic 3D instances from per-view masks (module docstring)."""
    from tqdm.auto import tqdm

    from .geometry import geometric_segments
    import time

    cfg = cfg or ProposalConfig()
    t0 = time.perf_counter()
    sp = superpoints if superpoints is not None else geometric_segments(
        cloud, threshold=cfg.superpoint_threshold, min_size=cfg.superpoint_min_size)
    sp = np.asarray(sp, np.int64)
    t_sp = time.perf_counter() - t0
    obs_list = list(tqdm(observations, desc="instance masks", unit="view", disable=not progress))
    sp = _split_by_masks(cloud, sp, obs_list, cfg)
    S = int(sp.max()) + 1 if len(sp) and sp.max() >= 0 else 0
    stats = [s for s in (_view_stats(o, sp) for o in obs_list) if s is not None]
    t1 = time.perf_counter()
    lab = np.arange(S)
    C = S
    rounds = []
    for th in cfg.thresholds:
        while True:   # at one threshold, merge until nothing more joins
            obs = [_observe(st, lab, C, cfg) for st in stats]
            pairs = [_pairs_together(c, m) for c, m, _ in obs]
            pairs = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
            if len(pairs) == 0:
                break
            key, together = np.unique(pairs[:, 0] * C + pairs[:, 1], return_counts=True)
            a, b = key // C, key % C
            seen = np.zeros((len(stats), C), bool)
            for v, (c, _, _) in enumerate(obs):
                seen[v, c] = True
            covis = np.zeros(len(a), np.int64)
            step = max(1, 20_000_000 // max(len(stats), 1))
            for s0 in range(0, len(a), step):
                covis[s0:s0 + step] = (seen[:, a[s0:s0 + step]] & seen[:, b[s0:s0 + step]]).sum(0)
            join = (together >= cfg.min_together) & (together >= th * covis)
            if not join.any():
                break
            comp = _union(C, np.stack([a[join], b[join]], 1))
            lab = comp[lab]
            C = int(comp.max()) + 1
            rounds.append((th, int(join.sum()), C))
    # final statistics: observed views, IoU-based score, supporting views
    obs = [_observe(st, lab, C, cfg) for st in stats]
    n_obs = np.zeros(C, np.int64)
    iou_sum = np.zeros(C)
    support: list[list] = [[] for _ in range(C)]
    for st, (c, _, iou) in zip(stats, obs):
        n_obs[c] += 1
        iou_sum[c] += iou
        vis = np.bincount(lab[st.sp], weights=st.sp_count, minlength=C)
        for ci, q in zip(c.tolist(), iou.tolist()):
            support[ci].append((q * vis[ci], st.name))
    size = np.bincount(lab[sp[sp >= 0]], minlength=C) if S else np.zeros(0, np.int64)
    keep = np.flatnonzero((size >= cfg.min_points) & (n_obs >= cfg.min_views))
    score = (iou_sum[keep] / np.maximum(n_obs[keep], 1)) * (n_obs[keep] / (n_obs[keep] + 1.0))
    order = np.argsort(-score, kind="stable")
    keep, score = keep[order], score[order]
    new = np.full(C + 1, -1, np.int64)
    new[keep] = np.arange(len(keep))
    ids = np.where(sp >= 0, new[lab[np.maximum(sp, 0)]], -1)
    if cfg.absorb > 0 and len(keep):
        ids = _absorb(ids, obs_list, len(keep), cfg.absorb)
    views = [[n for _, n in sorted(support[c], key=lambda t: -t[0])[:cfg.keep_views]] for c in keep]
    meta = {"superpoints": S, "views": len(stats), "rounds": rounds,
            "seconds": {"superpoints": round(t_sp, 3), "masks": round(t1 - t0 - t_sp, 3),
                        "merging": round(time.perf_counter() - t1, 3)}}
    return Instances(ids.astype(np.int64), score.astype(np.float32), views, meta=meta)


def from_ids(ids: np.ndarray, scores: np.ndarray | None = None, *, min_points: int = 1) -> Instances:
    """External proposals (a per-point instance id, e.g. Mask3D's; <= 0 or -1 = none)."""
    ids = np.asarray(ids, np.int64).reshape(-1)
    u, inv, cnt = np.unique(np.where(ids > 0, ids, -1), return_inverse=True, return_counts=True)
    valid = (u > 0) & (cnt >= min_points)
    new = np.full(len(u), -1, np.int64)
    new[valid] = np.arange(valid.sum())
    sc = np.ones(int(valid.sum()), np.float32) if scores is None else np.asarray(scores, np.float32)[u[valid]]
    return Instances(new[inv], sc, [[] for _ in range(int(valid.sum()))], meta={"external": True})


# -- per-instance features ---------------------------------------------------------------------------

def point_features(inst: Instances, fc: FeatureCloud) -> np.ndarray:
    """Each instance's feature from its members' fused features (seen points only)."""
    D = fc.features.shape[1]
    out = np.zeros((len(inst), D), np.float32)
    seen = fc.seen
    for k, m in enumerate(inst.member_lists()):
        m = m[seen[m]]
        if len(m):
            f = fc.features[m].astype(np.float32).mean(0)
            out[k] = f / max(float(np.linalg.norm(f)), 1e-8)
    return out


def view_features(inst: Instances, n_points: int, views: Callable[[], Iterator[tuple]], top_k: int = 5) -> np.ndarray:
    """Each instance's feature from the 2D features of the ``top_k`` views that see it best
    (OpenMask3D's idea, on the cached per-view features: the mask-level and dense features at
    the instance's own pixels, averaged per view, then over views). ``views()`` yields
    (Visibility, ViewFeatures)."""
    want: dict[str, list[int]] = {}
    for k, vs in enumerate(inst.views):
        for name in vs[:top_k]:
            want.setdefault(name, []).append(k)
    out = None
    for vis, feats in views():
        ks = want.get(vis.name)
        if not ks:
            continue
        f = feats.sample(vis.pixels)
        if out is None:
            out = np.zeros((len(inst), f.shape[1]), np.float32)
        own = inst.ids[vis.point_ids]
        for k in ks:
            sel = own == k
            if sel.any():
                g = f[sel].astype(np.float32).mean(0)
                out[k] += g / max(float(np.linalg.norm(g)), 1e-8)
    if out is None:
        return np.zeros((len(inst), 0), np.float32)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-8)


# -- masks for the oracle benchmark ------------------------------------------------------------------

def instance_map(view, instance_ids: np.ndarray) -> np.ndarray:
    """(H, W) GT instance id seen at each pixel (-1 where nothing or no instance)."""
    idx = view.index
    out = np.full(idx.shape, -1, np.int64)
    hit = idx >= 0
    v = np.asarray(instance_ids, np.int64)[idx[hit]]
    out[hit] = np.where(v > 0, v, -1)
    return out


def corrupt_masks(masks: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Split, merge or drop (one third each) a ``fraction`` of a view's masks: the mistakes a 2D
    mask model makes. A split cuts a mask across its longer axis; a merge joins it with a mask
    it touches (else the nearest)."""
    out = masks.copy()
    ids = np.unique(out[out >= 0])
    if fraction <= 0 or len(ids) == 0:
        return out
    nxt = int(ids.max()) + 1
    pick = ids[rng.random(len(ids)) < fraction]
    H, W = out.shape
    for r in pick:
        m = out == r
        if not m.any():
            continue
        op = rng.integers(3)
        if op == 0:
            out[m] = -1
        elif op == 1:
            ys, xs = np.nonzero(m)
            p = np.stack([ys, xs], 1).astype(np.float64)
            p -= p.mean(0)
            axis = np.linalg.eigh(p.T @ p)[1][:, -1]
            side = p @ axis > 0
            out[ys[side], xs[side]] = nxt
            nxt += 1
        else:
            ys, xs = np.nonzero(m)
            y0, y1, x0, x1 = max(ys.min() - 1, 0), min(ys.max() + 2, H), max(xs.min() - 1, 0), min(xs.max() + 2, W)
            sub, ms = out[y0:y1, x0:x1], m[y0:y1, x0:x1]
            grown = ms.copy()
            grown[1:] |= ms[:-1]; grown[:-1] |= ms[1:]; grown[:, 1:] |= ms[:, :-1]; grown[:, :-1] |= ms[:, 1:]
            nb = sub[grown & ~ms]
            nb = nb[(nb >= 0) & (nb != r)]
            if len(nb):
                other = np.bincount(nb).argmax()
            else:
                rest = ids[(ids != r)]
                if len(rest) == 0:
                    continue
                other = rest[rng.integers(len(rest))]
            out[out == other] = r
    return out


# -- the stage: cached views -> instances with features, and their files -----------------------------

def make_instances(fc: FeatureCloud, views: Callable[[], Iterator[tuple]], cfg=None, *,
                   progress: bool = False) -> Instances:
    """Proposals from every view's masks (the 2D stage's region maps) and one feature each.

    ``views()`` yields (Visibility, ViewFeatures) per view (the pipeline's cache); ``cfg`` is an
    :class:`pc_ovseg.config.InstancesConfig`.
    """
    import time

    from .config import InstancesConfig
    cfg = cfg or InstancesConfig()

    def observations():
        for vis, feats in views():
            if feats.regions is not None:
                yield mask_observation(vis, feats.regions)
    inst = propose(fc.cloud, observations(), cfg.proposal(), progress=progress)
    t = time.perf_counter()
    if cfg.feature == "views":
        inst.features = view_features(inst, len(fc.cloud), views, top_k=cfg.top_k)
    else:
        inst.features = point_features(inst, fc)
    inst.meta["seconds"]["features"] = round(time.perf_counter() - t, 3)
    inst.meta["feature"] = cfg.feature
    inst.encoder, inst.class_names = fc.encoder, fc.class_names
    return inst


def export_rows(inst: Instances, boxes: np.ndarray, *, vocabulary=None, engine=None) -> list[dict]:
    """instances.json's objects: points, score, box, best views (+ class, confidence, top 5)."""
    sizes = np.bincount(inst.ids[inst.ids >= 0], minlength=len(inst))
    rows = [{"id": k, "points": int(sizes[k]), "score": round(float(inst.scores[k]), 4),
             "bbox_min": boxes[k, 0].round(4).tolist(), "bbox_max": boxes[k, 1].round(4).tolist(),
             "views": inst.views[k][:5] if k < len(inst.views) else []} for k in range(len(inst))]
    if vocabulary is not None and engine is not None and len(inst):
        lab = engine.label_instances(inst, vocabulary)
        for r, c, p, top in zip(rows, lab.labels, lab.confidence, lab.top):
            r.update(label=lab.names[c], confidence=round(float(p), 4), top5=[[n, round(q, 4)] for n, q in top])
    return rows


def export_instances(out, fc: FeatureCloud, inst: Instances, *, vocabulary=None, engine=None,
                     stem: str = "instances") -> dict:
    """``instances.npz`` (ids, scores, features, views), ``instances.ply`` / ``.las`` (an
    ``instance`` field, -1 = none, coloured per instance), ``instances.json`` (boxes, scores,
    supporting views and, with a vocabulary, each instance's class and top-5)."""
    from pathlib import Path

    from . import io
    from .colors import UNSEEN_RGB, palette
    from .store import write_json
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    inst.save(out / f"{stem}.npz")
    if vocabulary is not None and engine is None:
        from .query import QueryEngine
        engine = QueryEngine(fc)
    rows = export_rows(inst, inst.boxes(fc.cloud), vocabulary=vocabulary, engine=engine)
    colors = np.tile(UNSEEN_RGB, (len(inst.ids), 1)).astype(np.uint8)
    if len(inst):
        pal = palette(len(inst) + 20)[20:]  # past the class colours: instances never look like labels
        colors[inst.ids >= 0] = pal[inst.ids[inst.ids >= 0]]
    files = [str(out / f"{stem}.npz")]
    extra = {"instance": inst.ids.astype(np.int32),
             "instance_score": np.where(inst.ids >= 0, inst.scores[np.maximum(inst.ids, 0)] if len(inst) else 0,
                                        0).astype(np.float32)}
    for ext in ("ply", "las"):
        io.write(out / f"{stem}.{ext}", fc.cloud, colors=colors, extra=extra)
        files.append(str(out / f"{stem}.{ext}"))
    write_json(out / f"{stem}.json", {"instances": len(inst), "points_in_instances": int((inst.ids >= 0).sum()),
                                      "feature": inst.meta.get("feature"), "seconds": inst.meta.get("seconds"),
                                      "objects": rows})
    files.append(str(out / f"{stem}.json"))
    return {"instances": len(inst), "instance_files": files}


def write_scannet_instances(out, scene: str, inst: Instances, labels: np.ndarray, confidence: np.ndarray,
                            labelset) -> list[str]:
    """The ScanNet instance benchmark's prediction files: ``<scene>.txt`` with lines
    ``pred_mask/<scene>_NNN.txt RAW_LABEL_ID CONFIDENCE`` and one 0/1 mask file per instance
    (what ``pc-ovseg eval --instances`` and the official script read)."""
    from pathlib import Path

    from .store import write_text
    out = Path(out)
    raw = labelset.to_raw(np.asarray([labelset.ids[int(c)] for c in labels], np.int64)) if len(labels) else []
    lines = []
    for k, m in enumerate(inst.member_lists()):
        rel = f"pred_mask/{scene}_{k:03d}.txt"
        mask = np.zeros(len(inst.ids), np.uint8)
        mask[m] = 1
        write_text(out / rel, "\n".join(map(str, mask.tolist())) + "\n")
        lines.append(f"{rel} {int(raw[k])} {float(confidence[k] * inst.scores[k]):.6f}")
    write_text(out / f"{scene}.txt", "\n".join(lines) + ("\n" if lines else ""))
    return [str(out / f"{scene}.txt")]
