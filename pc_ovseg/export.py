"""Exports of a labelled result: per-point labels in PLY/LAS/NPZ, a legend, benchmark files.

Every export declares itself with a *result header* (:func:`result_header`): which field holds
the prediction (``label``: the class id, -1 = unseen) and the label set it was labelled with
(class names, ids, prompts, LAS codes, colours). It travels in PLY ``comment pc_ovseg result`` /
``class`` lines, a LAS VLR, the NPZ's ``header`` array and the FeatureCloud header
(``FeatureCloud.labelset``), so ``pc-ovseg eval`` reads the prediction, never a carried-over
input field, and maps its ids by class name without being told the vocabulary again.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .data import FeatureCloud
from .errors import InputError
from .labels import LabelSet

RESULT_FORMAT = "pc_ovseg.result/1"
PRED_FIELD = "label"
#: LAS classification of an unseen point: "shift" codes id + 1 (0 = never classified), "asprs"
#: writes the ids themselves (ASPRS codes; 1 = unclassified).
LAS_UNSEEN = {"shift": 0, "asprs": 1}
BENCHMARK_FORMATS = ("scannet", "semantickitti")


def as_labelset(vocabulary, class_ids=None) -> LabelSet:
    """The label set behind a vocabulary: a LabelSet, a Vocabulary (eval) carrying one, or plain
    class names whose ids are ``class_ids`` (default: their positions)."""
    if isinstance(vocabulary, LabelSet):
        return vocabulary
    if getattr(vocabulary, "labelset", None) is not None:
        return vocabulary.labelset
    names = [str(n) for n in vocabulary]
    if class_ids is None:
        return LabelSet.from_names(names)
    ids = [int(i) for i in class_ids]
    if len(ids) != len(names) or min(ids, default=0) < 0:
        raise ValueError(f"{len(ids)} class ids for {len(names)} names (ids must be >= 0)")
    by_id = ["ignore"] * (max(ids, default=-1) + 1)
    for i, n in zip(ids, names):
        by_id[i] = n
    return LabelSet("custom", by_id, ignore_ids=tuple(i for i in range(len(by_id)) if i not in set(ids)))


def las_classification(ids: np.ndarray, las_codes: str) -> np.ndarray:
    """Class ids (-1 = unseen) -> LAS classification codes; ids a byte cannot hold read as unseen."""
    if las_codes not in LAS_UNSEEN:
        raise ValueError(f"las_codes must be one of {', '.join(LAS_UNSEEN)}, got {las_codes!r}")
    codes = ids + (1 if las_codes == "shift" else 0)
    return np.where((ids >= 0) & (codes <= 255), codes, LAS_UNSEEN[las_codes]).astype(np.uint8)


def result_header(ls: LabelSet, las_codes: str = "shift") -> dict:
    """The declaration stored with a result: prediction field, label set, codes and colours."""
    from .colors import UNSEEN_RGB, palette
    pal = palette(ls.num_classes)
    codes = las_classification(ls.ids, las_codes)
    classes = [{"id": int(i), "name": n, "prompts": list(ls.prompts[n]), "rgb": pal[k].tolist(), "las": int(c)}
               for k, (i, n, c) in enumerate(zip(ls.ids, ls.names, codes))]
    return {"format": RESULT_FORMAT, "pred_field": PRED_FIELD, "score_field": "score",
            "labelset": ls.name, "title": ls.title, "las_codes": las_codes,
            "unseen": {"id": -1, "rgb": UNSEEN_RGB.tolist(), "las": LAS_UNSEEN[las_codes]}, "classes": classes}


def labelset_from_header(header: dict, path=None) -> LabelSet:
    """The LabelSet a result header declares (ids, names, prompts)."""
    try:
        classes = header["classes"]
        by_id = ["ignore"] * (max(int(c["id"]) for c in classes) + 1)
        for c in classes:
            by_id[int(c["id"])] = str(c["name"])
        ids = {int(c["id"]) for c in classes}
        prompts = {str(c["name"]): [str(p) for p in c.get("prompts") or [c["name"]]] for c in classes}
        return LabelSet(str(header.get("labelset") or "custom"), by_id, prompts=prompts,
                        ignore_ids=tuple(i for i in range(len(by_id)) if i not in ids),
                        title=str(header.get("title") or ""), path=None if path is None else os.fspath(path))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(path, f"malformed pc_ovseg result header ({type(exc).__name__}: {exc})") from None


def read_result_header(path) -> dict | None:
    """The result header a PLY/LAS/NPZ export declares, or None (not written by export_labels)."""
    p = os.fspath(path)
    ext = Path(p).suffix.lower()
    try:
        if ext == ".ply":
            return _ply_result_header(p)
        if ext in (".las", ".laz"):
            import laspy

            from .io.las import RESULT_VLR
            with laspy.open(p) as f:
                vlr = next((v for v in f.header.vlrs if (v.user_id, v.record_id) == RESULT_VLR), None)
            return None if vlr is None else json.loads(bytes(vlr.record_data).decode())
        if ext == ".npz":
            with np.load(p, allow_pickle=False) as z:
                if "header" not in z.files or "features" in z.files:
                    return None
                h = json.loads(bytes(z["header"]).decode())
            return h if isinstance(h, dict) and h.get("format") == RESULT_FORMAT else None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(p, f"cannot read its header ({type(exc).__name__}: {exc})") from None
    except Exception as exc:  # laspy's own errors: the file's fault
        raise InputError(p, f"cannot read its header ({type(exc).__name__})") from None
    return None


def _ply_result_header(p: str) -> dict | None:
    """``comment pc_ovseg result`` / ``class`` lines (pc_ovseg.io.ply.result_comments), header only."""
    head = b""
    with open(p, "rb") as f:
        while b"end_header" not in head:
            chunk = f.read(65536)
            if not chunk:
                return None
            head += chunk
    result, classes = None, []
    for line in head[:head.index(b"end_header")].decode("ascii", "replace").splitlines():
        tok = line.split(None, 3)
        if len(tok) == 4 and tok[:2] == ["comment", "pc_ovseg"] and tok[2] in ("result", "class"):
            value = json.loads(tok[3])
            if tok[2] == "result":
                result = value
            else:
                classes.append(value)
    return None if result is None else {**result, "classes": classes}


def export_labels(out_dir: str | Path, fc: FeatureCloud, vocabulary, *, class_ids=None, las_codes: str = "shift",
                  min_similarity=None, formats=("ply", "las", "npz"), result: str | Path | None = None,
                  benchmark: str | None = None, scene: str | None = None,
                  text_encoder=None) -> dict:
    """Label every point over ``vocabulary`` and write PLY/LAS/NPZ + legend; returns a summary.

    ``vocabulary``: a LabelSet, a Vocabulary carrying one, or class names (ids ``class_ids``).
    Every file holds the prediction as ``label`` (class id, -1 = unseen) and ``score``, the label
    colour as its colour, the input's fields as ``input_<name>`` where a name is taken (input
    colour as ``input_red/green/blue``), and the result header. LAS classification is one byte
    without a "none" value: the input's own classification stays in it when it has one, else it
    holds the prediction (``las_codes="shift"``: id + 1, 0 = unseen; ``"asprs"``: the ids, 1 =
    unseen). ``result`` names the FeatureCloud file to store the header in (the run's
    ``fused.npz``), so evaluating it labels it exactly as these files are. ``benchmark`` also
    writes the benchmark's own prediction file (:func:`write_benchmark`). ``text_encoder``: an
    already loaded encoder of ``fc.encoder`` (a run's), so labelling does not load it again.
    """
    from . import io
    from .colors import label_colors, palette, save_legend
    from .query import QueryEngine

    ls = as_labelset(vocabulary, class_ids)
    header = result_header(ls, las_codes)
    res = QueryEngine(fc, text_encoder=text_encoder).labels(ls, min_similarity=min_similarity)
    seen = res.labels >= 0
    ids = np.where(seen, ls.ids[np.maximum(res.labels, 0)], -1).astype(np.int32)
    if benchmark is not None and benchmark not in BENCHMARK_FORMATS:
        raise InputError(None, f"benchmark format must be one of {', '.join(BENCHMARK_FORMATS)}, got {benchmark!r}")
    raw = None if benchmark is None else ls.to_raw(ids)  # before writing: a label set without raw ids stops here
    colors = label_colors(res.labels, ls.num_classes)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        p = out / f"labels.{fmt}"
        extra = {}
        if fmt in ("las", "laz") and "classification" not in fc.cloud.fields:
            extra["classification"] = las_classification(ids, las_codes)
        io.write(p, fc.cloud, labels=ids, scores=res.scores, colors=colors, extra=extra, header=header)
        written.append(str(p))
    if raw is not None:
        written.append(write_benchmark(out, raw, benchmark, scene or Path(fc.cloud.source or "scene").stem))
    hist = np.bincount(res.labels[seen], minlength=ls.num_classes)
    save_legend(out / "legend.png", ls.names, palette(ls.num_classes), title=ls.title or ls.name,
                counts=hist, unseen=int((~seen).sum()))
    if result is not None:
        fc.labelset = header
        fc.save(result)
    return {"files": written + [str(out / "legend.png")], "labelset": ls.name,
            "label_counts": {n: int(c) for n, c in zip(ls.names, hist)},
            "class_ids": {n: int(i) for n, i in zip(ls.names, ls.ids)},
            "unseen": int((~seen).sum()), "points": len(res.labels)}


def object_labels(n: int, objs) -> np.ndarray:
    """Per-point object index of ``QueryEngine.objects`` (-1 = in no object)."""
    lab = np.full(n, -1, np.int32)
    for k, o in enumerate(objs):
        lab[o.point_ids] = k
    return lab


def write_benchmark(out_dir: str | Path, raw: np.ndarray, fmt: str, scene: str) -> str:
    """Raw dataset ids (LabelSet.to_raw) as a benchmark's own prediction file; returns its path.

    ``scannet``: ``<scene>.txt``, one NYU40 id per line, as ScanNet's evaluate_semantic_label.py
    reads it (0 = unseen). ``semantickitti``: ``<scene>.label``, one little-endian uint32 per
    point, the raw SemanticKITTI id in the lower 16 bits (instance 0; 0 = unlabeled).
    """
    if fmt == "scannet":
        path = Path(out_dir) / f"{scene}.txt"
        np.savetxt(path, raw, fmt="%d")
    else:
        path = Path(out_dir) / f"{scene}.label"
        np.asarray(raw).astype("<u4").tofile(path)
    return str(path)
