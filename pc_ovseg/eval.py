"""Evaluation: mIoU / mAcc / coverage, confusion matrix, bar chart; reading predictions and GT.

Classes are named by a label set (pc_ovseg.labels: ``LabelSet``, ``parse_classes``).

Metric rules (the same for the API and ``pc-ovseg eval``):
- A ground-truth point is *evaluated* unless its id is negative, equals ``ignore_label``, is beyond
  the class list, is in ``ignore_ids`` or is named ``"ignore"``.
- A prediction is a *prediction* only if it names an evaluated class. ``-1``, unseen points (``seen``
  False), ids beyond the class list and ignored ids mean "no prediction": the point counts as a
  false negative of its ground-truth class and as a false positive of no class.
- IoU_c = TP / (TP + FP + FN) and acc_c = TP / support_c, over evaluated points only.
- mIoU and mAcc average over the classes *present in the ground truth* (support > 0). A class absent
  from the ground truth is left out of the means even when it is predicted; its wrong predictions
  still lower the IoU of the classes whose points they took (through FN).
- coverage = evaluated points with a prediction / evaluated points.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import InputError
from .labels import LabelSet, as_int_labels, parse_classes, remap_labels

# --- metrics ------------------------------------------------------------------------------------

@dataclass
class EvalResult:
    """Per-class and mean scores over the evaluated classes (see the module docstring for rules)."""

    class_names: list[str]          # evaluated classes, id order
    class_ids: np.ndarray           # (K,) their label ids
    confusion: np.ndarray           # (K, K) int64, rows = ground truth, cols = prediction
    unpredicted: np.ndarray         # (K,) evaluated GT points with no prediction, per GT class
    num_ignored: int                # points left out (ignored / out-of-range GT)

    def __post_init__(self):
        cm = self.confusion
        self.tp = np.diag(cm).astype(np.int64)
        self.support = cm.sum(1) + self.unpredicted
        self.predicted = cm.sum(0)
        fp = self.predicted - self.tp
        fn = self.support - self.tp
        with np.errstate(invalid="ignore", divide="ignore"):
            denom = self.tp + fp + fn
            self.iou = np.where(denom > 0, self.tp / np.maximum(denom, 1), np.nan)
            self.acc = np.where(self.support > 0, self.tp / np.maximum(self.support, 1), np.nan)
        self.present = self.support > 0

    @classmethod
    def from_record(cls, r: dict, class_names) -> "EvalResult":
        """The result a unit's record holds (``class_ids``, ``confusion``, ``unpredicted``,
        ``num_ignored``, as bench and tiles write them); ``class_names`` indexed by id."""
        ids = np.asarray(r["class_ids"])
        return cls([class_names[i] for i in ids], ids, np.asarray(r["confusion"], np.int64),
                   np.asarray(r["unpredicted"], np.int64), int(r["num_ignored"]))

    @classmethod
    def sum_records(cls, records, class_names) -> "EvalResult | None":
        """One result over many units' records (a split's scenes, a cloud's tiles), None for none."""
        total = None
        for r in records:
            er = cls.from_record(r, class_names)
            total = er if total is None else total + er
        return total

    def __add__(self, other: "EvalResult") -> "EvalResult":
        """Scores over two clouds together (a split = the sum of its scenes' confusion matrices)."""
        if list(self.class_ids) != list(other.class_ids):
            raise ValueError("cannot add results over different classes")
        return EvalResult(list(self.class_names), self.class_ids.copy(), self.confusion + other.confusion,
                          self.unpredicted + other.unpredicted, self.num_ignored + other.num_ignored)

    @property
    def num_points(self) -> int:
        """Evaluated points."""
        return int(self.support.sum())

    @property
    def miou(self) -> float:
        return float(self.iou[self.present].mean()) if self.present.any() else math.nan

    @property
    def macc(self) -> float:
        return float(self.acc[self.present].mean()) if self.present.any() else math.nan

    @property
    def oacc(self) -> float:
        """Overall point accuracy."""
        return float(self.tp.sum() / self.num_points) if self.num_points else math.nan

    @property
    def coverage(self) -> float:
        n = self.num_points
        return float(1.0 - self.unpredicted.sum() / n) if n else math.nan

    def to_json(self) -> dict:
        """Plain JSON types; NaN (undefined: class absent from GT) becomes null."""
        def num(x):
            x = float(x)
            return None if math.isnan(x) else round(x, 6)
        per_class = {
            n: {"id": int(i), "iou": num(iou), "acc": num(acc), "support": int(s), "predicted": int(p),
                "unpredicted": int(u)}
            for n, i, iou, acc, s, p, u in zip(self.class_names, self.class_ids, self.iou, self.acc,
                                               self.support, self.predicted, self.unpredicted)}
        return {"miou": num(self.miou), "macc": num(self.macc), "oacc": num(self.oacc),
                "coverage": num(self.coverage), "num_points": self.num_points,
                "num_ignored": int(self.num_ignored), "num_classes_present": int(self.present.sum()),
                "per_class": per_class, "class_names": list(self.class_names),
                "class_ids": [int(i) for i in self.class_ids], "confusion": self.confusion.tolist()}


def group_scores(result: EvalResult, groups: dict[str, list[str]] | None) -> dict:
    """mIoU / mAcc over each named subset of classes (ScanNet200 head / common / tail), with the
    same present-in-GT rule as the overall means."""
    from .labels import norm_name
    pos = {norm_name(n): k for k, n in enumerate(result.class_names)}
    out = {}
    for g, names in (groups or {}).items():
        idx = [pos[norm_name(n)] for n in names if norm_name(n) in pos]
        keep = [k for k in idx if result.present[k]]
        out[g] = {"miou": round(float(result.iou[keep].mean()), 6) if keep else None,
                  "macc": round(float(result.acc[keep].mean()), 6) if keep else None,
                  "classes": len(idx), "classes_present": len(keep)}
    return out


def evaluate(pred, gt, class_names: "Sequence[str] | LabelSet", *, ignore_ids: Sequence[int] = (),
             ignore_label: int = -1, seen: np.ndarray | None = None) -> EvalResult:
    """Score per-point predictions against ground truth; both are label ids of ``class_names``.

    ``seen`` (bool per point) marks points that some view saw; the others count as no prediction.
    One bincount over the evaluated points builds the confusion matrix, so 10M points take well
    under a second.
    """
    ls = parse_classes(class_names)
    ignored = ls.ignored.copy()
    extra = [int(i) for i in ignore_ids]
    ignored[[i for i in extra if 0 <= i < len(ignored)]] = True
    C = len(ignored)
    gt = as_int_labels(np.asarray(gt).reshape(-1) if np.ndim(gt) else np.asarray(gt), None)
    pred = as_int_labels(np.asarray(pred).reshape(-1) if np.ndim(pred) else np.asarray(pred), None)
    if gt.ndim != 1 or pred.ndim != 1:
        raise InputError(None, "labels must be one value per point")
    if len(gt) != len(pred):
        raise InputError(None, f"prediction has {len(pred)} points, ground truth {len(gt)}")
    if gt.dtype not in (np.int32, np.int64):  # clip() below needs a signed type that holds C
        gt = gt.astype(np.int64)
    if pred.dtype not in (np.int32, np.int64):
        pred = pred.astype(np.int64)
    # Lookup tables over ids -1..C (clipped): GT id -> row offset or -1, prediction -> column with
    # C meaning "no prediction". Two gathers and one bincount; no per-class loops.
    ar = np.arange(C, dtype=np.int64)
    row_of = np.concatenate([[-1], np.where(ignored, -1, ar * (C + 1)), [-1]])
    col_of = np.concatenate([[C], np.where(ignored, C, ar), [C]])
    gt_c = np.clip(gt, -1, C)
    if -1 <= ignore_label < C:
        row_of[ignore_label + 1] = -1
    row = row_of[gt_c + 1]
    if ignore_label >= C or ignore_label < -1:  # outside the table: mask it explicitly
        row[gt == ignore_label] = -1
    col = col_of[np.clip(pred, -1, C) + 1]
    if seen is not None:
        seen = np.asarray(seen).reshape(-1)
        if len(seen) != len(gt):
            raise InputError(None, f"seen mask has {len(seen)} points, ground truth {len(gt)}")
        col[~seen.astype(bool, copy=False)] = C
    valid = row >= 0
    n_valid = int(np.count_nonzero(valid))
    cm = np.bincount(row[valid] + col[valid], minlength=C * (C + 1)).reshape(C, C + 1)
    ev = np.flatnonzero(~ignored)
    return EvalResult(class_names=[ls.class_names[i] for i in ev], class_ids=ev,
                      confusion=cm[np.ix_(ev, ev)].astype(np.int64), unpredicted=cm[ev, C].astype(np.int64),
                      num_ignored=int(len(gt) - n_valid))


# --- reading per-point labels -------------------------------------------------------------------

LABEL_FILE_EXTS = (".npy", ".label", ".txt")
# Per-point fields that can hold labels: PLY 'label', LAS 'classification', ...
LABEL_FIELDS = ("label", "labels", "classification", "class", "semantic", "semantic_label", "scalar_label",
                "category_id", "pred", "prediction")


def read_point_labels(path: str | os.PathLike, field: str | None = None, *,
                      flag: str = "--pred-field/--gt-field") -> np.ndarray:
    """One integer label per point from a label file (.npy/.label/.txt) or a cloud's field.

    Clouds and label files are read by pc_ovseg.io (read_cloud / read_labels). ``field`` names the
    per-point field of a cloud (``label`` in PLY, ``classification`` in LAS); by default the one
    field of LABEL_FIELDS the cloud has. A cloud with several (a ground-truth ``label`` beside a
    ``classification``) is refused rather than guessed: name one with ``flag``.
    """
    from .errors import check_input_path
    p = check_input_path(path)
    ext = Path(p).suffix.lower()
    if ext in LABEL_FILE_EXTS and field is None:
        labels = _read_label_file(p)
    else:
        fields = _read_cloud_fields(p)
        if field is None:
            found = [f for f in fields if f.lower() in LABEL_FIELDS]
            if not found:
                raise InputError(p, f"no label field (looked for {', '.join(LABEL_FIELDS[:3])}, ...); "
                                    f"fields: {', '.join(fields) or 'none'}; name one with {flag}")
            if len(found) > 1:
                raise InputError(p, f"several fields can hold the labels ({', '.join(found)}) and the file does "
                                    f"not say which is the prediction; name one with {flag}")
            field = found[0]
        elif field not in fields:
            match = [f for f in fields if f.lower() == field.lower()]
            if not match:
                raise InputError(p, f"no field {field!r}; fields: {', '.join(fields) or 'none'}")
            field = match[0]
        labels = np.asarray(fields[field])
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise InputError(p, f"labels have shape {labels.shape}, expected one value per point")
    return as_int_labels(labels, p)


def _read_label_file(p: str) -> np.ndarray:
    from .io import read_labels
    return np.asarray(read_labels(p))


def _read_cloud_fields(p: str) -> dict[str, np.ndarray]:
    """Per-point fields of a cloud file, as pc_ovseg.io names them (LAS 'classification', ...)."""
    from .io import read_cloud
    return dict(read_cloud(p).fields)


def _is_feature_cloud(path: str) -> bool:
    """A FeatureCloud .npz (features to query), not an exported labels.npz."""
    if Path(path).suffix.lower() != ".npz":
        return False
    import zipfile
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            return False
        with z:
            return "features" in z.files
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return True  # FeatureCloud.load says what is wrong with it


def stored_labelset(fc, path=None) -> LabelSet | None:
    """The label set a FeatureCloud was labelled with (its result header), if any."""
    if not fc.labelset:
        return None
    from .export import labelset_from_header
    return labelset_from_header(fc.labelset, path)


def predict_feature_cloud(path, vocab: LabelSet) -> tuple[np.ndarray, np.ndarray]:
    """Query a FeatureCloud (.npz path or loaded) with ``vocab``: (positions in ``vocab.names``, -1 =
    none; seen mask).

    Labels by QueryEngine.labels, the rule ``pc-ovseg run/query`` export with, so a FeatureCloud and
    its exports score the same. Points no view saw come back as -1.
    """
    from .data import FeatureCloud
    from .query import QueryEngine  # heavy (text encoders): only when a feature file is evaluated
    fc = path if isinstance(path, FeatureCloud) else FeatureCloud.load(path)
    pos = as_int_labels(np.asarray(QueryEngine(fc).labels(vocab).labels).reshape(-1), path).astype(np.int64)
    if len(pos) != len(fc.weight):
        raise InputError(path, f"query returned {len(pos)} labels for {len(fc.weight)} points")
    ok = (pos >= 0) & (pos < vocab.num_classes)
    return np.where(ok, pos, -1), np.asarray(fc.seen, dtype=bool)


def _positions_to_ids(pos: np.ndarray, vocab: LabelSet) -> np.ndarray:
    """Positions in ``vocab.names`` (what a plain label file from a query holds) -> its label ids."""
    pos = pos.astype(np.int64, copy=False)
    ok = (pos >= 0) & (pos < vocab.num_classes)
    return np.where(ok, vocab.ids[np.where(ok, pos, 0)], -1)


def _ids_to_ids(ids: np.ndarray, src: LabelSet, cls: LabelSet, path=None) -> np.ndarray:
    """Label ids of ``src`` (the prediction's label set) -> label ids of ``cls``, matched by class
    name; a class ``cls`` lacks becomes "no prediction"."""
    ids = ids.astype(np.int64, copy=False)
    if cls is src:
        return ids
    table = np.full(len(src.class_names) + 1, -1, np.int64)
    for i, n in zip(src.ids, src.names):
        j = cls.id_of(n)
        table[i] = -1 if j is None else j
    if not (table >= 0).any():
        raise InputError(path, f"none of its classes ({', '.join(src.names[:5])}, ...) is a class of "
                               f"{cls.name!r}; check --classes")
    ok = (ids >= 0) & (ids < len(src.class_names))
    return np.where(ok, table[np.where(ok, ids, len(src.class_names))], -1)


def evaluate_files(pred: str | os.PathLike, gt: str | os.PathLike, classes=None, *, labels=None,
                   pred_field: str | None = None, gt_field: str | None = None, ignore_ids: Sequence[int] = (),
                   remap_gt: bool = False, remap_pred: bool = False) -> tuple[EvalResult, LabelSet]:
    """``pc-ovseg eval``: read PRED and GT (clouds, label files, or a FeatureCloud .npz) and score.

    ``classes`` (anything :func:`parse_classes` takes) names the GT label ids. A PRED written by
    ``pc-ovseg run/query`` declares its prediction field and label set (pc_ovseg.export), and is
    read by that: its ids map to ``classes`` by class name (default ``classes``: its own label set).
    A FeatureCloud PRED is labelled with the label set stored in it, else with ``labels``, else
    ``classes``, else its label-space class names. ``labels`` is the vocabulary behind an undeclared
    PRED file, which then holds positions in it. ``remap_*`` maps raw dataset ids through the label
    set's raw ids (undeclared PRED only).
    """
    from .export import labelset_from_header, read_result_header
    pred, gt = os.fspath(pred), os.fspath(gt)
    gt_labels = read_point_labels(gt, gt_field, flag="--gt-field")
    vocab = parse_classes(labels) if labels is not None else None
    cls = parse_classes(classes) if classes is not None else None
    seen, src = None, None
    if pred_field is None and _is_feature_cloud(pred):
        from .data import FeatureCloud
        fc = FeatureCloud.load(pred)
        src = vocab or stored_labelset(fc, pred) or cls or (LabelSet.from_names(fc.class_names) if fc.class_names else None)
        if src is None:
            raise InputError(pred, "feature file has no label set or class names: give --labels or --classes")
        pos, seen = predict_feature_cloud(fc, src)
        pred_labels = _positions_to_ids(pos, src)
    else:
        declared = read_result_header(pred) if pred_field is None else None
        if declared is not None:
            src = labelset_from_header(declared, pred)
            if vocab is not None and vocab.names != src.names:
                raise InputError(pred, f"was labelled with {src.name!r} ({', '.join(src.names[:4])}, ...), not "
                                       f"the --labels vocabulary; leave --labels out")
            pred_labels = read_point_labels(pred, declared.get("pred_field", "label"))
        else:
            if cls is None and vocab is None:
                raise InputError(None, "--classes is required: a label set name (e.g. scannet20), a JSON file, "
                                       "or comma-separated class names indexed by label id")
            pred_labels = read_point_labels(pred, pred_field, flag="--pred-field")
            if remap_pred:
                pred_labels = remap_labels(pred_labels, cls or vocab)
            if vocab is not None:
                pred_labels, src = _positions_to_ids(pred_labels, vocab), vocab
    cls = cls or src
    if src is not None:
        pred_labels = _ids_to_ids(pred_labels, src, cls, pred)
    if remap_gt:
        gt_labels = remap_labels(gt_labels, cls)
    if len(pred_labels) != len(gt_labels):
        raise InputError(pred, f"has {len(pred_labels)} points but the ground truth {gt} has {len(gt_labels)}")
    return evaluate(pred_labels, gt_labels, cls, ignore_ids=ignore_ids, seen=seen), cls


# --- presentation -------------------------------------------------------------------------------

def format_table(result: EvalResult, *, all_classes: bool = False) -> str:
    """Per-class table for the terminal; classes absent from GT and predictions are hidden."""
    rows = []
    w = max([len("class")] + [len(n) for n in result.class_names])
    rows.append(f"{'class':<{w}}  {'IoU':>6}  {'acc':>6}  {'support':>9}  {'predicted':>9}")
    for n, iou, acc, s, p in zip(result.class_names, result.iou, result.acc, result.support, result.predicted):
        if not all_classes and s == 0 and p == 0:
            continue
        f = (lambda x: "     -" if math.isnan(x) else f"{x:6.3f}")
        rows.append(f"{n:<{w}}  {f(iou)}  {f(acc)}  {s:>9d}  {p:>9d}")
    rows.append("-" * len(rows[0]))
    fm = (lambda x: "-" if math.isnan(x) else f"{x:.4f}")
    rows.append(f"mIoU {fm(result.miou)}  mAcc {fm(result.macc)}  oAcc {fm(result.oacc)}  "
                f"coverage {fm(result.coverage)}  ({int(result.present.sum())} classes present, "
                f"{result.num_points} points evaluated, {result.num_ignored} ignored)")
    return "\n".join(rows)


CHART_WIDTH = 800
CHART_ROW = 20
CHART_HEADER = 48
CHART_FOOTER = 28


def _chart_rows(result: EvalResult, only_present: bool) -> list[int]:
    keep = (result.support > 0) | (result.predicted > 0) if only_present else np.ones(len(result.iou), bool)
    return [int(i) for i in np.flatnonzero(keep)]


def chart_size(result: EvalResult, *, width: int = CHART_WIDTH, only_present: bool = True) -> tuple[int, int]:
    """(width, height) of :func:`save_bar_chart`'s image: one row per class shown."""
    n = max(1, len(_chart_rows(result, only_present)))
    return width, CHART_HEADER + n * CHART_ROW + CHART_FOOTER


def _font(size: int):
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: bitmap font only
        return ImageFont.load_default()


def save_bar_chart(result: EvalResult, path: str | os.PathLike, *, width: int = CHART_WIDTH,
                   only_present: bool = True, title: str | None = None) -> tuple[int, int]:
    """Horizontal per-class IoU bars (PNG, drawn with Pillow); returns the image size.

    Classes absent from the ground truth but predicted are drawn as a grey "n/a" row; with
    ``only_present`` classes neither present nor predicted are left out. The dashed line is mIoU.
    """
    from PIL import Image, ImageDraw
    rows = _chart_rows(result, only_present)
    W, H = chart_size(result, width=width, only_present=only_present)
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    font, small = _font(13), _font(11)
    label_w = min(W // 3, 12 + 7 * max([len(result.class_names[i]) for i in rows] + [4]))
    x0, x1 = label_w + 8, W - 70
    fm = (lambda x: "n/a" if math.isnan(x) else f"{x:.3f}")
    head = title or "per-class IoU"
    d.text((8, 6), head, fill="black", font=font)
    d.text((8, 24), f"mIoU {fm(result.miou)}   mAcc {fm(result.macc)}   coverage {fm(result.coverage)}   "
                    f"({int(result.present.sum())} classes in ground truth)", fill=(60, 60, 60), font=small)
    y_end = CHART_HEADER + max(1, len(rows)) * CHART_ROW
    for t in (0.0, 0.25, 0.5, 0.75, 1.0):  # grid first, bars over it
        x = x0 + int(round(t * (x1 - x0)))
        d.line([x, CHART_HEADER - 2, x, y_end], fill=(215, 215, 215))
        d.text((x - 10, y_end + 6), f"{t:.2f}", fill=(90, 90, 90), font=small)
    y = CHART_HEADER
    for i in rows:
        name, iou = result.class_names[i], float(result.iou[i])
        d.text((8, y + 3), name[: max(4, label_w // 7)], fill="black", font=small)
        d.rectangle([x0, y + 3, x1, y + CHART_ROW - 3], outline=(225, 225, 225))
        if result.present[i]:
            t = 0.0 if math.isnan(iou) else iou
            color = (int(220 * (1 - t)) + 20, int(180 * t) + 40, 60)
            if t > 0:
                d.rectangle([x0, y + 3, x0 + int(round(t * (x1 - x0))), y + CHART_ROW - 3], fill=color)
            d.text((x1 + 6, y + 3), fm(iou), fill="black", font=small)
        else:
            d.text((x1 + 6, y + 3), "n/a", fill=(150, 150, 150), font=small)
        y += CHART_ROW
    if not math.isnan(result.miou):
        x = x0 + int(round(result.miou * (x1 - x0)))
        for yy in range(CHART_HEADER - 2, y_end, 6):
            d.line([x, yy, x, min(yy + 3, y_end)], fill=(30, 30, 200), width=2)
    img.save(os.fspath(path), format="PNG")
    return W, H


__all__ = ["evaluate", "read_point_labels", "evaluate_files", "EvalResult", "format_table", "save_bar_chart",
           "chart_size"]
