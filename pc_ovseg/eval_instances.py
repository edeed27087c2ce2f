"""Instance AP as ScanNet's ``evaluate_semantic_instance.py`` computes it (written anew from
reading that public script): AP over the overlaps 0.50:0.95:0.05, AP50, AP25, per class and
averaged over the classes the GT has, for any label set.

Per scene, a prediction is a point mask with a class and a confidence; the GT is per-point
semantic ids and instance ids. As in the script:

- predicted masks of fewer than ``min_region_size`` (100) points are dropped; GT instances that
  small are not counted (neither found nor missed), and a prediction's points on such instances
  of its class count as "void" when it matches nothing;
- a GT instance is matched by the first unused prediction of its class whose IoU exceeds the
  overlap threshold; a second matching prediction keeps the higher confidence for the match and
  becomes a false positive at the lower;
- an unmatched prediction is a false positive unless more than the threshold's share of its points
  lie on void (unannotated / not-evaluated points, or too-small and stuff GT instances);
- unmatched GT instances are false negatives; precision/recall at every distinct confidence, AP
  as the script's step rule (recall steps of half widths); a class with GT but no prediction has
  AP 0, one with neither is left out (NaN).

``class_agnostic=True`` scores every mask as one class (proposal quality).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

OVERLAPS = np.append(np.arange(0.5, 0.95, 0.05), 0.25)
MIN_REGION_SIZE = 100


@dataclass
class InstancePrediction:
    """One predicted instance: the points it covers (indices or a boolean mask), its class id
    (an id of the label set, as the GT's) and its confidence."""

    mask: np.ndarray
    label: int
    score: float


@dataclass
class InstanceAP:
    class_names: list[str]
    ap: np.ndarray            # (C,) mean over 0.50:0.95, NaN where the class has no GT and no prediction
    ap50: np.ndarray
    ap25: np.ndarray
    per_overlap: np.ndarray = field(repr=False, default=None)  # (C, len(OVERLAPS))

    @property
    def mean_ap(self) -> float:
        return _nanmean(self.ap)

    @property
    def mean_ap50(self) -> float:
        return _nanmean(self.ap50)

    @property
    def mean_ap25(self) -> float:
        return _nanmean(self.ap25)

    def to_json(self) -> dict:
        num = lambda x: None if not np.isfinite(x) else round(float(x), 6)  # noqa: E731
        return {"ap": num(self.mean_ap), "ap50": num(self.mean_ap50), "ap25": num(self.mean_ap25),
                "per_class": {n: {"ap": num(a), "ap50": num(b), "ap25": num(c)}
                              for n, a, b, c in zip(self.class_names, self.ap, self.ap50, self.ap25)
                              if np.isfinite(a) or np.isfinite(b)}}


def _nanmean(x) -> float:
    x = np.asarray(x, np.float64)
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")


@dataclass
class _Gt:
    label: int
    points: np.ndarray      # sorted point ids
    size: int
    counted: bool           # large enough to be found or missed
    matched: list = field(default_factory=list)   # [(pred index, intersection)]


@dataclass
class _Pred:
    label: int
    score: float
    points: np.ndarray
    size: int
    void: int
    matched: list = field(default_factory=list)   # [(gt index, intersection)]


def _scene(preds, sem, inst, evaluated, min_size, agnostic):
    sem = np.asarray(sem, np.int64).reshape(-1)
    inst = np.asarray(inst, np.int64).reshape(-1)
    n = len(sem)
    valid = np.isin(sem, evaluated)
    gts = []
    owner = np.full(n, -1, np.int64)
    for k in np.unique(inst[(inst > 0) & valid]):
        pts = np.flatnonzero((inst == k) & valid)
        lab = int(np.bincount(sem[pts]).argmax())
        g = _Gt(-1 if agnostic else lab, pts, len(pts), len(pts) >= min_size)
        owner[pts] = len(gts)
        gts.append(g)
    void = ~valid | ((inst <= 0) & valid)          # unannotated, not evaluated, or no instance id
    out = []
    for p in preds:
        m = np.asarray(p.mask)
        pts = np.flatnonzero(m) if m.dtype == bool else np.unique(m.astype(np.int64))
        if m.dtype == bool and len(m) != n:
            raise ValueError(f"a predicted mask has {len(m)} entries for {n} points")
        if len(pts) < min_size:
            continue
        q = _Pred(-1 if agnostic else int(p.label), float(p.score), pts, len(pts), int(void[pts].sum()))
        hit = owner[pts]
        for gi, cnt in zip(*np.unique(hit[hit >= 0], return_counts=True)):
            g = gts[gi]
            if g.label == q.label:
                g.matched.append((len(out), int(cnt)))
                q.matched.append((int(gi), int(cnt)))
        out.append(q)
    return gts, out


def _ap(y_true, y_score, hard_fn) -> float:
    order = np.argsort(y_score, kind="stable")
    ys, yt = np.asarray(y_score)[order], np.asarray(y_true)[order]
    cum = np.cumsum(yt)
    _, uniq = np.unique(ys, return_index=True)
    n_pr = len(uniq) + 1
    n_ex = len(ys)
    n_true = cum[-1] if len(cum) else 0
    precision, recall = np.zeros(n_pr), np.zeros(n_pr)
    cum = np.append(cum, 0)
    for r, i in enumerate(uniq):
        c = cum[i - 1]
        tp = n_true - c
        fp = n_ex - i - tp
        fn = c + hard_fn
        precision[r] = tp / (tp + fp) if tp + fp > 0 else 0.0
        recall[r] = tp / (tp + fn) if tp + fn > 0 else 0.0
    precision[-1], recall[-1] = 1.0, 0.0
    rc = np.append(recall[0], recall)
    rc = np.append(rc, 0.0)
    steps = np.convolve(rc, [-0.5, 0, 0.5], "valid")
    return float(np.dot(precision, steps))


def evaluate_instances(scenes, class_ids, class_names=None, *, min_region_size: int = MIN_REGION_SIZE,
                       class_agnostic: bool = False) -> InstanceAP:
    """``scenes``: iterable of (predictions, gt semantic ids, gt instance ids) per scene;
    ``class_ids``: the evaluated semantic ids (e.g. a LabelSet's evaluated ids)."""
    class_ids = [int(c) for c in class_ids]
    names = list(class_names) if class_names is not None else [str(c) for c in class_ids]
    parsed = [_scene(list(p), s, i, class_ids, min_region_size, class_agnostic) for p, s, i in scenes]
    labels = [-1] if class_agnostic else class_ids
    names = ["instance"] if class_agnostic else names
    aps = np.full((len(labels), len(OVERLAPS)), np.nan)
    for li, lab in enumerate(labels):
        for oi, th in enumerate(OVERLAPS):
            y_true, y_score, hard_fn = [], [], 0
            has_gt = has_pred = False
            for gts, preds in parsed:
                mine = [g for g in gts if g.label == lab and g.counted]
                cand = [p for p in preds if p.label == lab]
                has_gt |= bool(mine)
                has_pred |= bool(cand)
                visited = np.zeros(len(preds), bool)
                cur_true = np.ones(len(mine))
                cur_score = np.full(len(mine), -np.inf)
                cur_match = np.zeros(len(mine), bool)
                for gi, g in enumerate(mine):
                    found = False
                    for pi, inter in g.matched:
                        if visited[pi]:
                            continue
                        p = preds[pi]
                        iou = inter / (g.size + p.size - inter)
                        if iou > th:
                            if cur_match[gi]:   # a second match: the lower confidence is a false positive
                                hi, lo = max(cur_score[gi], p.score), min(cur_score[gi], p.score)
                                cur_score[gi] = hi
                                cur_true = np.append(cur_true, 0)
                                cur_score = np.append(cur_score, lo)
                                cur_match = np.append(cur_match, True)
                            else:
                                found = True
                                cur_match[gi] = True
                                cur_score[gi] = p.score
                                visited[pi] = True
                    if not found:
                        hard_fn += 1
                cur_true, cur_score = cur_true[cur_match], cur_score[cur_match]
                for p in cand:
                    if any(inter / (gts[gi].size + p.size - inter) > th for gi, inter in p.matched):
                        continue
                    ignore = p.void + sum(inter for gi, inter in p.matched if not gts[gi].counted)
                    if ignore / p.size <= th:
                        cur_true = np.append(cur_true, 0)
                        cur_score = np.append(cur_score, p.score)
                y_true.append(cur_true)
                y_score.append(cur_score)
            if has_gt and has_pred:
                aps[li, oi] = _ap(np.concatenate(y_true), np.concatenate(y_score), hard_fn)
            elif has_gt:
                aps[li, oi] = 0.0
    o50, o25 = np.isclose(OVERLAPS, 0.5), np.isclose(OVERLAPS, 0.25)
    main = ~o25
    with np.errstate(all="ignore"):
        ap = np.array([_nanmean(r[main]) for r in aps])
    return InstanceAP(names, ap, aps[:, o50][:, 0], aps[:, o25][:, 0], aps)


# --- the ScanNet benchmark's files -----------------------------------------------------------------

def read_gt_instances(path) -> tuple[np.ndarray, np.ndarray]:
    """ScanNet's instance GT ``<scene>.txt``: one ``label * 1000 + instance`` per point ->
    (raw semantic ids, instance ids; 0 = none)."""
    from .errors import InputError, check_input_path
    p = check_input_path(path)
    try:
        ids = np.loadtxt(p, dtype=np.int64, ndmin=1)
    except ValueError as exc:
        raise InputError(p, f"not a ScanNet instance GT file (one integer per line: {exc})") from None
    return ids // 1000, np.where(ids >= 1000, ids, 0)


def read_pred_instances(path, n_points: int) -> list[InstancePrediction]:
    """ScanNet's instance prediction ``<scene>.txt``: lines ``MASK_FILE LABEL_ID CONFIDENCE`` with
    each mask file (relative to it) holding one 0/1 per point; label ids are raw dataset ids."""
    import os
    from .errors import InputError, check_input_path
    p = check_input_path(path)
    out = []
    with open(p, encoding="utf-8", errors="replace") as f:
        for k, ln in enumerate(f, 1):
            parts = ln.split()
            if not parts:
                continue
            if len(parts) != 3:
                raise InputError(p, f"line {k}: expected 'MASK_FILE LABEL_ID CONFIDENCE', got {ln.strip()[:80]!r}")
            mpath = os.path.join(os.path.dirname(p), parts[0])
            try:
                label, score = int(parts[1]), float(parts[2])
                mask = np.loadtxt(check_input_path(mpath), dtype=np.int64, ndmin=1) != 0
            except ValueError as exc:
                raise InputError(p, f"line {k}: {exc}") from None
            if len(mask) != n_points:
                raise InputError(mpath, f"mask has {len(mask)} entries, the GT has {n_points} points")
            out.append(InstancePrediction(mask, label, score))
    return out


def evaluate_instance_files(preds, gts, labelset, *, class_agnostic: bool = False) -> InstanceAP:
    """``pc-ovseg eval PRED --gt GT --instances``: ScanNet-format files (one or several scenes,
    paired in order), raw ids mapped through the label set (NYU40 -> ScanNet-20, ...)."""
    from .labels import parse_classes, remap_labels
    ls = parse_classes(labelset)
    evaluated = [int(i) for i in ls.ids]
    scenes = []
    for pp, gp in zip(preds, gts):
        raw_sem, inst = read_gt_instances(gp)
        sem = remap_labels(raw_sem, ls) if ls.raw_map else raw_sem
        ps = read_pred_instances(pp, len(sem))
        for q in ps:
            q.label = int(remap_labels(np.array([q.label]), ls)[0]) if ls.raw_map else q.label
        scenes.append((ps, sem, inst))
    return evaluate_instances(scenes, evaluated, [ls.class_names[i] for i in evaluated],
                              class_agnostic=class_agnostic)
