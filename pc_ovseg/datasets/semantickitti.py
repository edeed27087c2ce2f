"""SemanticKITTI in the layout it ships in: ``sequences/NN/`` under the root (or under
``dataset/``), each with ``velodyne/NNNNNN.bin`` (float32 x y z remission per point),
``labels/NNNNNN.label`` (uint32 per point: the raw semantic id in the low 16 bits, the instance
id in the high 16), ``poses.txt`` (one 3x4 row-major camera-0 pose per scan, in the first scan's
camera frame) and ``calib.txt`` (``P0:`` .. ``P3:`` and ``Tr:``, velodyne -> camera 0).

A scene is one scan, named ``NN_NNNNNN`` (sequence, scan), its points in the scanner's own frame
as the .bin stores them, remission as the ``remission`` field; ``frame_skip`` keeps every Nth
scan of a sequence (by scan number). Ground truth as semantic-kitti-api makes it: the raw id
through ``learning_map`` of semantic-kitti.yaml (the ``raw_map`` of ``semantickitti19``: 0 =
unlabeled/outlier, ignored; moving classes fold onto their static class). Instances are the
whole 32-bit label where the instance bits are non-zero (0 = none), so an id is one object of
one class, as the panoptic evaluator pairs them. Splits as semantic-kitti.yaml: train 00-07 and
09-10, val 08, test 11-21 (no labels: all -1). Predictions are written in the benchmark's own
form (``<scene>.label``, raw ids; ``sequences/NN/predictions/NNNNNN.label`` on submission).
:meth:`SemanticKITTI.accumulated` stacks consecutive scans in one scan's frame with poses.txt
and calib.txt (lidar pose = Tr^-1 P Tr, as the API's generate_sequential.py).
"""
from __future__ import annotations

import os
import re

import numpy as np

from ..errors import InputError
from ..io._common import check_file, make_cloud
from ..labels import remap_labels
from .base import Dataset, GTScene, register_dataset

SPLITS = {"train": (0, 1, 2, 3, 4, 5, 6, 7, 9, 10), "val": (8,), "test": tuple(range(11, 22))}
_SCENE = re.compile(r"(\d{2})_(\d{6})")


@register_dataset("semantickitti")
class SemanticKITTI(Dataset):
    dataset_name = "semantickitti"
    labelsets = ("semantickitti19",)
    splits = ("train", "val", "test")
    has_frames = False
    benchmark_format = "semantickitti"

    def __init__(self, root, **kw):
        super().__init__(root, **kw)
        nested = os.path.join(self.root, "dataset", "sequences")
        direct = os.path.join(self.root, "sequences")
        self.sequences_dir = direct if os.path.isdir(direct) or not os.path.isdir(nested) else nested
        self._poses: dict[str, np.ndarray] = {}

    # --- scenes -----------------------------------------------------------------------------

    def scans(self, seq: str) -> list[str]:
        """Scan numbers (6 digits) of a sequence's velodyne/ folder, in order."""
        d = os.path.join(self.sequences_dir, seq, "velodyne")
        if not os.path.isdir(d):
            return []
        return sorted(f[:-4] for f in os.listdir(d) if re.fullmatch(r"\d{6}\.bin", f))

    def scenes(self, split: str) -> list[str]:
        self.check_split(split)
        out = []
        for s in SPLITS[split]:
            seq = f"{s:02d}"
            out += [f"{seq}_{k}" for k in self.scans(seq) if int(k) % self.frame_skip == 0]
        if not out:
            seqs = ", ".join(f"{s:02d}" for s in SPLITS[split])
            raise InputError(self.sequences_dir, f"no scan (velodyne/NNNNNN.bin) of the {split} split's sequences {seqs}"
                                                 + (f" every {self.frame_skip}th" if self.frame_skip > 1 else ""))
        return out

    def _parse(self, name: str) -> tuple[str, str]:
        m = _SCENE.fullmatch(name)
        if not m:
            raise InputError(self.sequences_dir, f"scene {name!r} is not named NN_NNNNNN (sequence_scan)")
        return m.group(1), m.group(2)

    # --- one scene --------------------------------------------------------------------------

    def load(self, name: str) -> GTScene:
        seq, scan = self._parse(name)
        d = os.path.join(self.sequences_dir, seq)
        binp = os.path.join(d, "velodyne", f"{scan}.bin")
        if not os.path.isfile(binp):
            raise InputError(self.sequences_dir, f"scene {name!r}: no {seq}/velodyne/{scan}.bin")
        pts = read_scan(binp)
        n = len(pts)
        labp = os.path.join(d, "labels", f"{scan}.label")
        test = int(seq) in SPLITS["test"]
        if os.path.exists(labp):
            raw = read_label(labp, n, binp)
            sem, inst = raw & 0xFFFF, raw >> 16
            labels = remap_labels(sem, self.labelset)
            unknown = labels < 0
            if unknown.any():
                raise InputError(labp, f"raw id {int(sem[unknown][0])} is not in semantic-kitti.yaml's learning map")
            instances = np.where(inst > 0, raw, 0).astype(np.int64)
        elif test:
            labels, instances = np.full(n, -1, np.int64), None
        else:
            raise InputError(labp, f"not found: sequence {seq} is in the {'val' if seq == '08' else 'train'} "
                                   f"split, which ships labels")
        cloud = make_cloud(binp, pts[:, :3], fields={"remission": np.ascontiguousarray(pts[:, 3])})
        meta = {"sequence": seq, "scan": scan, "labels": labp if os.path.exists(labp) else None}
        return GTScene(name, cloud, labels, self.labelset, instances=instances, frames=None, mesh=None,
                       source=binp, meta=meta)

    # --- poses and several scans ----------------------------------------------------------------

    def pose(self, name: str) -> np.ndarray:
        """4x4 scanner-to-world of a scan (world = the sequence's first camera-0 frame)."""
        seq, scan = self._parse(name)
        if seq not in self._poses:
            d = os.path.join(self.sequences_dir, seq)
            tr = read_calib(os.path.join(d, "calib.txt"))["Tr"]
            cam = read_poses(os.path.join(d, "poses.txt"))
            self._poses[seq] = np.linalg.inv(tr) @ cam @ tr
        poses = self._poses[seq]
        if int(scan) >= len(poses):
            raise InputError(os.path.join(self.sequences_dir, seq, "poses.txt"),
                             f"has {len(poses)} poses, scan {scan} needs {int(scan) + 1}")
        return poses[int(scan)]

    def accumulated(self, name: str, scans: int) -> GTScene:
        """``scans`` consecutive scans ending at ``name`` (fewer at a sequence's start) in the
        frame of ``name``; ``name``'s own points come first (``meta['scan_points']`` of them),
        so its benchmark file is the first rows of the labels."""
        seq, scan = self._parse(name)
        own = self.load(name)
        T_inv = np.linalg.inv(self.pose(name))
        xyz, rem, labels, inst, used = [own.cloud.xyz.astype(np.float64)], [own.cloud.fields["remission"]], \
            [own.labels], [own.instances], [name]
        for k in range(int(scan) - 1, max(int(scan) - int(scans), -1), -1):
            other = f"{seq}_{k:06d}"
            g = self.load(other)
            M = T_inv @ self.pose(other)
            xyz.append(g.cloud.xyz.astype(np.float64) @ M[:3, :3].T + M[:3, 3])
            rem.append(g.cloud.fields["remission"])
            labels.append(g.labels)
            inst.append(g.instances)
            used.append(other)
        cloud = make_cloud(own.source, np.concatenate(xyz), fields={"remission": np.concatenate(rem)})
        instances = None if any(i is None for i in inst) else np.concatenate(inst)
        meta = {**own.meta, "scans": used, "scan_points": len(own.cloud)}
        return GTScene(name, cloud, np.concatenate(labels), self.labelset, instances=instances, source=own.source,
                       meta=meta)


# --- files ------------------------------------------------------------------------------------

def read_scan(path: str) -> np.ndarray:
    """(N, 4) float32 x y z remission of a velodyne .bin."""
    size = os.path.getsize(check_file(path))
    if size % 16:
        raise InputError(path, f"size {size} bytes is not a whole number of float32 x y z remission rows")
    return np.fromfile(path, "<f4").reshape(-1, 4)


def read_label(path: str, n: int, points: str) -> np.ndarray:
    """(N,) uint32 raw labels (semantic | instance << 16), one per point of ``points``."""
    size = os.path.getsize(check_file(path))
    if size % 4:
        raise InputError(path, f"size {size} bytes is not a whole number of uint32 labels")
    if size // 4 != n:
        raise InputError(path, f"holds {size // 4} labels, {os.path.basename(points)} has {n} points")
    return np.fromfile(path, "<u4").astype(np.int64)


def _rows_of_12(path: str, line: int, values: list[bytes]) -> np.ndarray:
    try:
        a = np.array(values, dtype="S").astype(np.float64)
    except ValueError:
        a = None
    if a is None or a.size != 12 or not np.isfinite(a).all():
        raise InputError(path, f"line {line} must hold 12 finite numbers (a 3x4 matrix, row-major)")
    m = np.eye(4)
    m[:3] = a.reshape(3, 4)
    return m


def read_calib(path: str) -> dict[str, np.ndarray]:
    """``KEY: 12 numbers`` lines of calib.txt as 4x4 matrices (P0..P3, Tr)."""
    check_file(path)
    out = {}
    with open(path, "rb") as f:
        for k, ln in enumerate(f, 1):
            if not ln.strip():
                continue
            key, sep, rest = ln.partition(b":")
            if not sep:
                raise InputError(path, f"line {k} is not 'KEY: 12 numbers'")
            out[key.strip().decode("ascii", "replace")] = _rows_of_12(path, k, rest.split())
    if "Tr" not in out:
        raise InputError(path, "has no 'Tr:' line (velodyne to camera 0)")
    return out


def read_poses(path: str) -> np.ndarray:
    """(S, 4, 4) camera-0 poses of poses.txt, one line of 12 numbers per scan."""
    check_file(path)
    with open(path, "rb") as f:
        rows = [_rows_of_12(path, k, ln.split()) for k, ln in enumerate(f, 1) if ln.strip()]
    if not rows:
        raise InputError(path, "holds no pose")
    return np.stack(rows)
