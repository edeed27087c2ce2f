"""ScanNet v2 in the layout it ships in: ``scans/<scene>/`` (``scans_test/`` for the test split).

A scene folder holds ``<scene>_vh_clean_2.ply`` (the points the benchmark scores),
``<scene>_vh_clean_2.labels.ply`` (vertex ``label`` = NYU40 id), the over-segmentation
``<scene>_vh_clean_2.0.010000.segs.json`` and ``<scene>.aggregation.json`` (objects as groups of
segments, each with its raw category), and the sensor stream ``<scene>.sens`` (or a SensReader
export: ``color/ depth/ pose/ intrinsic/``, in the folder or in ``exported/``).
``scannetv2-labels.combined.tsv`` and the split lists ``scannetv2_{train,val,test}.txt`` sit at the
root (split lists also under ``splits/``).

Ground truth as ScanNet's benchmark scripts make it: ScanNet-20 from the labels PLY's NYU40 ids;
ScanNet-200 from the aggregation (raw category -> the tsv ``id`` of its first row with that
``raw_category``; BenchmarkScripts/ScanNet200 preprocess_scannet200.py); instances = objectId + 1
(export_train_mesh_for_evaluation.py). Groups are applied in file order, so where two objects
claim a segment the later one wins, as in both scripts. Coordinates stay those of the mesh (not
axis-aligned): the frames' poses are in that frame.
"""
from __future__ import annotations

import csv
import os
import warnings

import numpy as np

from ..data import FrameSequence, Mesh, PointCloud
from ..errors import InputError
from ..io.ply import read_ply
from ..io.rgbd import _is_scannet, _load_json, read_scannet
from ..io.sens import read_sens
from ..labels import remap_labels
from .base import Dataset, GTScene, register_dataset, split_file

TSV = "scannetv2-labels.combined.tsv"
SCAN_DIRS = {"train": "scans", "val": "scans", "test": "scans_test"}


@register_dataset("scannet")
class ScanNet(Dataset):
    dataset_name = "scannet"
    labelsets = ("scannet20", "scannet200")
    splits = ("train", "val", "test")
    has_frames = True
    benchmark_format = "scannet"

    def __init__(self, root, **kw):
        super().__init__(root, **kw)
        self._tsv: dict[str, int] | None = None

    # --- scenes -----------------------------------------------------------------------------

    def scenes(self, split: str) -> list[str]:
        self.check_split(split)
        for folder in (self.root, os.path.join(self.root, "splits")):
            listed = os.path.join(folder, f"scannetv2_{split}.txt")
            if os.path.isfile(listed):
                return split_file(listed)
        scans = os.path.join(self.root, SCAN_DIRS[split])
        found = sorted(e.name for e in os.scandir(scans) if e.is_dir()) if os.path.isdir(scans) else []
        if not found:
            raise InputError(self.root, f"no scannetv2_{split}.txt split list and no scene folders in {SCAN_DIRS[split]}/")
        warnings.warn(f"{self.root}: no scannetv2_{split}.txt; using the {len(found)} scenes in {SCAN_DIRS[split]}/")
        return found

    def scene_dir(self, name: str) -> str:
        for sub in ("scans", "scans_test"):
            d = os.path.join(self.root, sub, name)
            if os.path.isdir(d):
                return d
        raise InputError(self.root, f"scene {name!r} is not in scans/ or scans_test/")

    # --- one scene --------------------------------------------------------------------------

    def load(self, name: str) -> GTScene:
        d = self.scene_dir(name)
        test = os.path.basename(os.path.dirname(d)) == "scans_test"
        ply = os.path.join(d, f"{name}_vh_clean_2.ply")
        geom = read_ply(ply)
        mesh = geom if isinstance(geom, Mesh) else None
        xyz, rgb = (geom.vertices, geom.vertex_rgb) if mesh is not None else (geom.xyz, geom.rgb)
        cloud = PointCloud(xyz, rgb, origin=geom.origin, source=ply)
        if mesh is not None:
            mesh = Mesh(mesh.vertices, mesh.faces, mesh.vertex_rgb, origin=mesh.origin, source=ply)
        n = len(cloud)
        segs = os.path.join(d, f"{name}_vh_clean_2.0.010000.segs.json")
        agg = os.path.join(d, f"{name}.aggregation.json")
        groups = self._groups(segs, agg, ply, n) if os.path.exists(segs) or os.path.exists(agg) or not test else None
        if self.labelset.name == "scannet200":
            labels = np.full(n, -1, np.int64)
            if groups is not None:
                group, cats, _ = groups
                tsv = self.category_ids()
                raw = np.array([tsv.get(c, 0) for c in cats] + [0], np.int64)[group]  # -1 -> the trailing 0
                labels = remap_labels(raw, self.labelset)
        else:
            labels = self._nyu40_labels(os.path.join(d, f"{name}_vh_clean_2.labels.ply"), ply, n, test)
        instances = None
        if groups is not None:
            group, _, object_ids = groups
            instances = np.append(object_ids + 1, 0)[group]
        frames, frames_src = self._frames(d, name)
        meta = {"n_frames": len(frames) if frames is not None else 0, "sens": frames_src if frames_src and
                frames_src.endswith(".sens") else None, "frames_source": frames_src, "frame_skip": self.frame_skip,
                "mesh": ply, "split_folder": "scans_test" if test else "scans"}
        return GTScene(name, cloud, labels, self.labelset, instances=instances, frames=frames, mesh=mesh,
                       source=d, meta=meta)

    def _nyu40_labels(self, path: str, ply: str, n: int, test: bool) -> np.ndarray:
        if test and not os.path.exists(path):
            return np.full(n, -1, np.int64)  # the hidden test split ships no labels
        lab = read_ply(path)
        m = len(lab.vertices) if isinstance(lab, Mesh) else len(lab)
        if m != n:
            raise InputError(path, f"has {m} vertices, the mesh {os.path.basename(ply)} has {n}")
        if "label" not in lab.fields:
            raise InputError(path, "has no vertex property 'label' (the NYU40 id)")
        return remap_labels(lab.fields["label"], self.labelset)

    def _groups(self, segs: str, agg: str, ply: str, n: int):
        """Per vertex the index of the object that owns it (-1 = none), each object's raw category
        and its objectId; the later object wins a segment two objects claim."""
        sd = _load_json(segs)
        seg = sd.get("segIndices")
        if not isinstance(seg, list):
            raise InputError(segs, "has no 'segIndices' list")
        try:
            seg = np.asarray(seg, np.int64)
        except (TypeError, ValueError, OverflowError):
            raise InputError(segs, "'segIndices' must hold one integer segment id per vertex") from None
        if seg.ndim != 1 or len(seg) != n:
            raise InputError(segs, f"'segIndices' has {len(seg)} entries, the mesh {os.path.basename(ply)} has {n} vertices")
        ad = _load_json(agg)
        items = ad.get("segGroups")
        if not isinstance(items, list):
            raise InputError(agg, "has no 'segGroups' list")
        useg, inverse = np.unique(seg, return_inverse=True)
        owner = np.full(len(useg), -1, np.int64)
        cats, object_ids = [], []
        for k, g in enumerate(items):
            ok = isinstance(g, dict) and isinstance(g.get("label"), str) and isinstance(g.get("segments"), list) \
                and isinstance(g.get("objectId"), int) and not isinstance(g.get("objectId"), bool)
            try:
                ids = np.asarray(g["segments"], np.int64).reshape(-1) if ok else None
            except (TypeError, ValueError, OverflowError):
                ids = None
            if ids is None:
                raise InputError(agg, f"segGroups[{k}] needs an integer 'objectId', a 'label' and a list of integer 'segments'")
            pos = np.clip(np.searchsorted(useg, ids), 0, max(len(useg) - 1, 0))
            missing = ids[useg[pos] != ids] if len(useg) else ids
            if len(missing):
                raise InputError(agg, f"segGroups[{k}] (objectId {g['objectId']}) names {len(missing)} segment ids not in "
                                      f"{os.path.basename(segs)}, e.g. {int(missing[0])}")
            owner[pos] = k
            cats.append(g["label"])
            object_ids.append(g["objectId"])
        return owner[inverse], cats, np.asarray(object_ids, np.int64)

    def category_ids(self) -> dict[str, int]:
        """raw_category -> id of scannetv2-labels.combined.tsv (the first row of a category counts)."""
        if self._tsv is None:
            path = os.path.join(self.root, TSV)
            if not os.path.isfile(path):
                raise InputError(path, "not found: ScanNet-200 labels map raw categories through this file")
            out: dict[str, int] = {}
            try:
                with open(path, encoding="utf-8", newline="") as f:
                    rows = csv.reader(f, delimiter="\t")
                    head = next(rows, [])
                    if "id" not in head or "raw_category" not in head:
                        raise InputError(path, "header lacks the 'id' and 'raw_category' columns")
                    i, c = head.index("id"), head.index("raw_category")
                    for line, row in enumerate(rows, 2):
                        if not any(row):
                            continue
                        try:
                            out.setdefault(row[c], int(row[i]))
                        except (IndexError, ValueError):
                            raise InputError(path, f"line {line} has no integer 'id' and 'raw_category'") from None
            except UnicodeDecodeError:
                raise InputError(path, "not UTF-8 text") from None
            self._tsv = out
        return self._tsv

    def _frames(self, d: str, name: str) -> tuple[FrameSequence | None, str | None]:
        sens = os.path.join(d, f"{name}.sens")
        if os.path.exists(sens):
            return read_sens(sens, frame_skip=self.frame_skip), sens
        for folder in (d, os.path.join(d, "exported")):
            if _is_scannet(folder):
                seq = read_scannet(folder)
                keep = [i for i, n in enumerate(seq.names) if not n.isdigit() or int(n) % self.frame_skip == 0]
                if not keep:
                    raise InputError(folder, f"no exported frame index is a multiple of frame_skip {self.frame_skip}")
                return (seq if len(keep) == len(seq) else seq.subset(keep)), folder
        return None, None
