"""Distillation over datasets: scenes streamed from disk, random crops to a point budget, a
prefetching worker, validation on held-out scenes every epoch and the best checkpoint kept.

A *scene directory* holds fused results (``*.npz`` FeatureClouds, or the per-scene
``<scene>/fused.npz`` of ``pc-ovseg bench``). Scenes are never all in memory: each step reads the
scenes of its batch, and only the rows of its crop (``FeatureCloud.save`` writes uncompressed
``.npz`` members, which are memory-mapped here), so a 10M-point tile or a whole sequence trains in
memory bounded by the point budget, not by the scene or dataset size. Crops are spheres around a
random seen point holding the ``point_budget`` nearest points (Pointcept's ``SphereCrop``).

``train_dataset`` builds batches in a background worker (a thread by default, so its CPU time
counts in ``time.process_time`` budgets; ``workers >= 1`` uses torch ``DataLoader`` processes)
while the current batch trains, and reuses :class:`~pc_ovseg.backbone.train.Trainer`'s steps.
"""
from __future__ import annotations

import json
import math
import os
import queue
import struct
import sys
import threading
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist

from ..data import FeatureCloud, PointCloud
from ..errors import InputError
from ..store import atomic_write
from .inputs import Augment, VoxelScene, input_channels, voxelize_scene
from .model import unet_spec
from .train import DistillResult, Trainer

#: OpenScene's 3D distillation recipe (MinkUNet18A, Adam 1e-4, poly schedule; 2 cm indoor with
#: colour, 5 cm outdoor), as presets of :func:`train_dataset` / ``pc-ovseg distill --preset``
PRESETS: dict[str, dict] = {
    "openscene-indoor": {"arch": "MinkUNet18A", "voxel_size": 0.02, "inputs": "color", "optimizer": "adam",
                         "lr": 1e-4, "schedule": "poly", "loss": "cosine", "batch_size": 8},
    "openscene-outdoor": {"arch": "MinkUNet18A", "voxel_size": 0.05, "inputs": "ones", "optimizer": "adam",
                          "lr": 1e-4, "schedule": "poly", "loss": "cosine", "batch_size": 8},
    # measured on SemanticKITTI in a 10 CPU-minute budget (docs/distill.md): small crops, many steps
    "cpu-outdoor": {"arch": "MinkUNet18A", "voxel_size": 0.05, "inputs": "ones", "optimizer": "adamw",
                    "lr": 2e-3, "schedule": "poly", "loss": "cosine+contrast", "batch_size": 1,
                    "point_budget": 20_000},
}


def list_scenes(path: str | os.PathLike) -> list[Path]:
    """The fused scenes of a directory: ``*.npz`` in it and ``*/fused.npz`` below it (bench output)."""
    base = Path(path)
    if not base.is_dir():
        raise InputError(base, "is not a directory of fused scenes")
    found = sorted(p for p in base.glob("*.npz") if p.is_file())
    found += sorted(p for p in base.glob("*/fused.npz") if p.is_file())
    if not found:
        raise InputError(base, "holds no fused scenes (*.npz or */fused.npz)")
    return found


class LazyScene:
    """One FeatureCloud file opened without reading it: stored members are memory-mapped."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            with zipfile.ZipFile(self.path) as z:
                self._members = {i.filename[:-4]: i for i in z.infolist() if i.filename.endswith(".npy")}
                if "header" not in self._members or "xyz" not in self._members:
                    raise InputError(self.path, "not a pc_ovseg feature file (no header/xyz)")
                self.header = json.loads(bytes(self._read(z, "header")).decode())
        except (zipfile.BadZipFile, OSError, ValueError, KeyError) as exc:
            raise InputError(self.path, f"not a pc_ovseg feature file ({type(exc).__name__}: {exc})") from None
        if self.header.get("format") != "pc_ovseg.FeatureCloud/1":
            raise InputError(self.path, "not a pc_ovseg feature file (unknown format)")
        if "basis" in self._members:
            raise InputError(self.path, "features are compressed (--compress); distil from a run without it")
        self.encoder = str(self.header.get("encoder") or "")
        self.class_names = self.header.get("class_names")

    def __contains__(self, name: str) -> bool:
        return name in self._members

    def fields(self) -> list[str]:
        return [k[6:] for k in self._members if k.startswith("field.")]

    def array(self, name: str) -> np.ndarray:
        """A memory map of a stored member (a plain read of a compressed one)."""
        with zipfile.ZipFile(self.path) as z:
            return self._read(z, name)

    def _read(self, z: zipfile.ZipFile, name: str) -> np.ndarray:
        info = self._members[name]
        if info.compress_type != zipfile.ZIP_STORED:
            with z.open(info) as f:
                return np.lib.format.read_array(f, allow_pickle=False)
        with z.open(info) as f:
            version = np.lib.format.read_magic(f)
            shape, fortran, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                     else np.lib.format.read_array_header_2_0(f))
            header_len = f.tell()
        if dtype.hasobject:
            raise ValueError(f"member {name} holds Python objects")
        with open(self.path, "rb") as fh:
            fh.seek(info.header_offset)
            local = fh.read(30)
        n_name, n_extra = struct.unpack("<HH", local[26:30])
        offset = info.header_offset + 30 + n_name + n_extra + header_len
        if int(np.prod(shape)) == 0:
            return np.zeros(shape, dtype)
        return np.memmap(self.path, dtype=dtype, mode="r", offset=offset, shape=shape,
                         order="F" if fortran else "C")


@dataclass
class CropConfig:
    """How one training sample is made from a scene."""

    point_budget: int | None = 20_000   # points per crop (None: whole scenes)
    dropout: float = 0.0                # share of the crop's points dropped at random
    mix: bool = False                   # Mix3D-style: two crops (of two scenes) overlaid in one sample
    label_field: str = "label"          # per-point GT ids (into class_names) for "ce" and validation


def sphere_crop(xyz: np.ndarray, budget: int, rng: np.random.Generator, candidates: np.ndarray | None = None
                ) -> np.ndarray:
    """Sorted indices of the ``budget`` points nearest a random centre point (Pointcept's SphereCrop);
    the centre is drawn from ``candidates`` (e.g. seen points) when given."""
    n = len(xyz)
    if n <= budget:
        return np.arange(n)
    pool = candidates if candidates is not None and len(candidates) else None
    c = xyz[int(pool[rng.integers(len(pool))]) if pool is not None else int(rng.integers(n))].astype(np.float32)
    d2 = np.zeros(n, np.float32)
    for k in range(3):  # per axis: no (N, 3) temporary for a 10M-point scene
        d2 += (np.asarray(xyz[:, k], np.float32) - c[k]) ** 2
    return np.sort(np.argpartition(d2, budget - 1)[:budget])


def read_sample(scene: LazyScene, rng: np.random.Generator, crop: CropConfig, *, need_labels: bool = False
                ) -> tuple[PointCloud, np.ndarray, np.ndarray, np.ndarray | None]:
    """(cloud, features, seen, labels or None) of one random crop: only the crop's rows are read."""
    xyz = scene.array("xyz")
    weight = scene.array("weight")
    seen_all = np.asarray(weight) > 0
    if crop.point_budget:
        idx = sphere_crop(xyz, crop.point_budget, rng, np.flatnonzero(seen_all) if not need_labels else None)
    else:
        idx = np.arange(len(xyz))
    if crop.dropout > 0 and len(idx) > 10:
        idx = idx[rng.random(len(idx)) >= crop.dropout]
    take = (lambda a: np.asarray(a[idx])) if len(idx) < len(xyz) else (lambda a: np.asarray(a))
    rgb = take(scene.array("rgb")) if "rgb" in scene else None
    normals = take(scene.array("normals")) if "normals" in scene else None
    cloud = PointCloud(take(xyz).astype(np.float32), rgb, normals, {}, source=str(scene.path))
    labels = None
    key = f"field.{crop.label_field}"
    if key in scene:
        labels = take(scene.array(key)).reshape(-1).astype(np.int64)
        names = scene.class_names or []
        ign = [i for i, n in enumerate(names) if n == "ignore"]
        labels[(labels >= len(names)) if names else np.zeros(len(labels), bool)] = -1
        if ign:
            labels[np.isin(labels, ign)] = -1
    elif need_labels:
        raise InputError(scene.path, f"has no per-point field {crop.label_field!r} (GT labels for the supervised loss)")
    return cloud, take(scene.array("features")), seen_all[idx], labels


def make_sample(paths: list[Path], i: int, rng: np.random.Generator, crop: CropConfig, voxel_size: float,
                inputs: str, augment: Augment | None, need_labels: bool = False) -> VoxelScene:
    """One augmented, voxelised training sample of scene ``i`` (Mix3D: overlaid on another scene's crop)."""
    parts = [read_sample(LazyScene(paths[i]), rng, crop, need_labels=need_labels)]
    if crop.mix and len(paths) > 1:
        j = int(rng.integers(len(paths) - 1))
        parts.append(read_sample(LazyScene(paths[j + (j >= i)]), rng, crop, need_labels=need_labels))
    clouds, feats, seens, labs = [], [], [], []
    for cloud, f, s, lab in parts:
        if augment:  # each part its own rotation/scale, centred, as Mix3D
            xyz = cloud.xyz.astype(np.float64)
            xyz = (xyz - (xyz.min(0) + xyz.max(0)) / 2) @ augment.transform(rng).T
            cloud = PointCloud(xyz.astype(np.float32), cloud.rgb, cloud.normals, {}, source=cloud.source)
        clouds.append(cloud)
        feats.append(f)
        seens.append(s)
        labs.append(lab if lab is not None else np.full(len(cloud), -1, np.int64))
    if len(clouds) == 1:
        cloud = clouds[0]
    else:
        cat = lambda attr: None if any(getattr(c, attr) is None for c in clouds) else np.concatenate(  # noqa: E731
            [getattr(c, attr) for c in clouds])
        cloud = PointCloud(np.concatenate([c.xyz for c in clouds]), cat("rgb"), cat("normals"), {},
                           source=clouds[0].source)
    return voxelize_scene(cloud, voxel_size, inputs, transform=None,
                          shift=rng.uniform(0, 1, 3) if augment else None,
                          jitter=augment.jitter if augment else 0.0, rng=rng,
                          features=np.concatenate(feats), seen=np.concatenate(seens),
                          labels=np.concatenate(labs))


class _Samples(torch.utils.data.Dataset):
    """Map-style view of one epoch's (scene index, seed) list, for torch DataLoader workers."""

    def __init__(self, paths, order, seeds, crop, voxel_size, inputs, augment, need_labels):
        self.args = (paths, order, seeds, crop, voxel_size, inputs, augment, need_labels)

    def __len__(self):
        return len(self.args[1])

    def __getitem__(self, k):
        paths, order, seeds, crop, vs, inputs, aug, need = self.args
        return make_sample(paths, order[k], np.random.default_rng(seeds[k]), crop, vs, inputs, aug, need)


def _prefetch(make: Callable[[int], VoxelScene], n: int, depth: int = 2) -> Iterator[VoxelScene]:
    """Samples 0..n-1 made by one background thread, at most ``depth`` ahead of the consumer."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work():
        try:
            for k in range(n):
                if stop.is_set():
                    return
                q.put(("ok", make(k)))
            q.put(("end", None))
        except BaseException as exc:  # re-raised in the consumer
            q.put(("err", exc))

    t = threading.Thread(target=work, name="distill-loader", daemon=True)
    t.start()
    try:
        while True:
            kind, item = q.get()
            if kind == "end":
                return
            if kind == "err":
                raise item
            yield item
    finally:
        stop.set()
        while t.is_alive():  # unblock a worker waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                t.join(0.05)


@dataclass
class ValResult:
    metric: str           # "miou" (GT labels given) or "cosine" (mean cos to fused targets)
    value: float
    scenes: int
    per_class: dict | None = None


def validate(model, paths: list[Path], *, voxel_size: float, inputs: str, label_field: str = "label",
             max_points: int | None = 2_000_000, device=None, seed: int = 0) -> ValResult:
    """Score the model on held-out scenes: mIoU against their GT label field when every scene has
    one (label-space features), else the mean cosine to their fused features on seen points.
    Scenes above ``max_points`` are scored on one fixed sphere crop of that size."""
    from ..eval import evaluate
    from ..query import QueryEngine
    from .predict import Distilled, predict
    was_training = model.training
    res_all, cos_sum, cos_n = None, 0.0, 0
    names = None
    use_miou = True
    scenes = [LazyScene(p) for p in paths]
    if any(f"field.{label_field}" not in s or not s.class_names for s in scenes):
        use_miou = False
    try:
        for k, s in enumerate(scenes):
            rng = np.random.default_rng([seed, k])
            cloud, feats, seen, labels = read_sample(s, rng, CropConfig(point_budget=max_points, label_field=label_field))
            d = Distilled(model, voxel_size, inputs, s.encoder, s.class_names, str(s.path))
            pred = predict(d, cloud, tta=1, device=device)
            if use_miou:
                names = list(s.class_names)
                lab = QueryEngine(pred).labels(names).labels
                r = evaluate(lab, labels, names, ignore_label=-1)
                res_all = r if res_all is None else res_all + r
            else:
                f = np.asarray(feats, np.float32)[seen]
                p = pred.features.astype(np.float32)[seen]
                nf = np.linalg.norm(f, axis=1) * np.linalg.norm(p, axis=1)
                ok = nf > 0
                cos_sum += float(((f * p).sum(1)[ok] / nf[ok]).sum())
                cos_n += int(ok.sum())
    finally:
        model.train(was_training)
    if use_miou:
        per = {n: (None if not res_all.present[i] else round(float(res_all.iou[i]), 4))
               for i, n in enumerate(res_all.class_names)}
        return ValResult("miou", float(res_all.miou), len(paths), per)
    return ValResult("cosine", cos_sum / max(cos_n, 1), len(paths))


@dataclass
class DatasetResult(DistillResult):
    best: dict = field(default_factory=dict)           # {"epoch", "step", "metric", "value", "checkpoint"}
    validation: list = field(default_factory=list)     # one row per validation
    samples_per_s: float = 0.0


def train_dataset(train: str | os.PathLike | list, out_ckpt: str | os.PathLike, *,
                  val: str | os.PathLike | list | None = None, epochs: int = 100, steps_per_epoch: int | None = None,
                  voxel_size: float = 0.05, inputs: str = "ones", arch: str = "MinkUNet18A",
                  lr: float = 2e-3, weight_decay: float = 1e-4, optimizer: str = "adamw", schedule: str = "poly",
                  batch_size: int = 1, crop: CropConfig | None = None, augment: Augment | None = Augment(),
                  loss: str = "cosine", temperature: float = 0.07, contrast_weight: float = 1.0,
                  max_minutes: float | None = None, cpu_budget: bool = False, workers: int = 0,
                  device=None, resume: bool = True, amp: bool = True, seed: int = 0, progress: bool | None = None,
                  model_overrides: dict | None = None, val_max_points: int | None = 2_000_000,
                  sync_bn: bool = True) -> DatasetResult:
    """Distil (or, with ``loss="ce"``, supervise) a MinkUNet over a directory of fused scenes.

    ``train``/``val``: a scene directory (:func:`list_scenes`) or a list of ``.npz`` paths. One
    epoch = ``steps_per_epoch`` steps (default: one crop of every scene), scenes shuffled; after
    each epoch rank 0 validates on ``val`` (mIoU or cosine, :func:`validate`; its time is not
    charged to the budget), keeps ``OUT.best.pt`` (the best validated weights) and writes
    ``OUT.val.csv`` and the validation curve into ``OUT.loss.png``. ``max_minutes`` is wall time,
    or this process's CPU time (``time.process_time``: loader thread included) with ``cpu_budget``.
    ``schedule="poly"`` decays the learning rate by (1 - progress)^0.9, progress being the larger of
    steps/(epochs*steps_per_epoch) and time used / budget, so a budget-bound run ends at lr 0.
    """
    crop = crop or CropConfig()
    paths = [Path(p) for p in train] if isinstance(train, (list, tuple)) else list_scenes(train)
    if not paths:
        raise InputError(None, "distillation needs at least one fused scene")
    val_paths = ([Path(p) for p in val] if isinstance(val, (list, tuple)) else list_scenes(val)) if val else []
    first = LazyScene(paths[0])
    dim = int(first.array("features").shape[1])
    for p in paths[1:]:
        d = int(LazyScene(p).array("features").shape[1])
        if d != dim:
            raise InputError(p, f"features have {d} dimensions, the first scene has {dim}")
    names = first.class_names
    if loss == "ce" and not names:
        raise InputError(paths[0], "the supervised loss needs label-space scenes (class_names)")
    out_dim = len(names) if loss == "ce" else dim
    vocab = None
    if loss == "cosine+contrast":
        if not names or len(names) != dim:
            raise InputError(paths[0], "the contrastive term needs label-space features (one-hot class_names); "
                                       "for CLIP features pass the vocabulary's text embeddings to Trainer.setup")
        vocab = np.eye(dim, dtype=np.float32)
        vocab = vocab[[i for i, n in enumerate(names) if n != "ignore"]]
    clock = time.process_time if cpu_budget else time.perf_counter
    t0 = clock()
    spec = unet_spec(arch, in_channels=input_channels(inputs), out_channels=out_dim, **(model_overrides or {}))
    meta = {"encoder": first.encoder, "class_names": names, "voxel_size": voxel_size, "inputs": inputs, "arch": arch,
            "loss": loss, "crop": asdict(crop)}
    val_cpu = [0.0]
    charged = (lambda: clock() - val_cpu[0])
    from .train import _dist_info
    rank, world, _ = _dist_info()
    per_rank = math.ceil(len(paths) / world)
    steps = steps_per_epoch or math.ceil(per_rank / batch_size)
    tr = Trainer.setup(spec, out_ckpt, epochs=epochs, meta=meta, lr=lr, weight_decay=weight_decay, device=device,
                       amp=amp, resume=resume, seed=seed, max_minutes=max_minutes, t0=t0, clock=charged,
                       optimizer=optimizer, schedule=schedule, total_steps=epochs * steps, loss=loss, vocab=vocab,
                       temperature=temperature, contrast_weight=contrast_weight, sync_bn=sync_bn)
    out_ckpt = Path(out_ckpt)
    best_path = out_ckpt.with_suffix(".best.pt")
    state = _load_val_state(out_ckpt) if resume else {"rows": [], "best": {}}
    show = (sys.stderr.isatty() if progress is None else progress) and tr.rank == 0
    from tqdm import tqdm
    bar = tqdm(total=steps * max(epochs - tr.state.epoch, 0), desc="distill", unit="step", disable=not show)
    stopped, n_samples, t_first = False, 0, clock()
    need_labels = loss == "ce"
    while tr.state.epoch < epochs and not stopped:
        rng = np.random.default_rng([seed, tr.state.epoch, 7919])
        perm = rng.permutation(len(paths))  # same on every rank; each takes its share
        mine = [int(perm[i]) for i in range(tr.rank, len(paths), tr.world)] or [int(perm[tr.rank % len(paths)])]
        n = steps * batch_size
        order = [mine[k % len(mine)] for k in range(n)]
        if n > len(mine):  # more samples than scenes: reshuffle each pass
            order = [mine[int(i)] for k in range(0, n, len(mine)) for i in rng.permutation(len(mine))][:n]
        seeds = [[seed, tr.state.epoch, tr.rank, k] for k in range(n)]
        if workers > 0:
            dl = torch.utils.data.DataLoader(
                _Samples(paths, order, seeds, crop, voxel_size, inputs, augment, need_labels), batch_size=None,
                shuffle=False, num_workers=workers, prefetch_factor=2, persistent_workers=False,
                collate_fn=lambda x: x)
            samples = iter(dl)
        else:
            samples = _prefetch(lambda k: make_sample(paths, order[k], np.random.default_rng(seeds[k]), crop,
                                                      voxel_size, inputs, augment, need_labels), n)
        batches = (_take(samples, batch_size) for _ in range(steps))
        losses, stopped = tr.train_epoch(batches, bar=bar)
        if hasattr(samples, "close"):
            samples.close()
        n_samples += len(losses) * batch_size
        tr.meta["validation"] = state
        if val_paths and losses:
            c0 = clock()
            if tr.rank == 0:
                v = validate(tr.model, val_paths, voxel_size=voxel_size, inputs=inputs, label_field=crop.label_field,
                             max_points=val_max_points, device=tr.device, seed=seed)
                row = {"epoch": tr.state.epoch + (1 if stopped else 0), "step": tr.state.step, "metric": v.metric,
                       "value": round(v.value, 6), "per_class": v.per_class,
                       "cpu_s" if cpu_budget else "seconds": round(c0 - val_cpu[0] - t0, 3)}
                state["rows"].append(row)
                tr.val_curve = [(r["step"], r["value"]) for r in state["rows"]]
                tr.val_name = v.metric
                if not state["best"] or v.value > state["best"]["value"]:
                    state["best"] = {**{k: row[k] for k in ("epoch", "step", "metric", "value")},
                                     "checkpoint": str(best_path)}
                    tr.save()  # the checkpoint then holds these weights; copy it as the best
                    _copy(out_ckpt, best_path)
            if tr.world > 1:
                dist.barrier()
            val_cpu[0] += clock() - c0
        tr.save()
        if tr.rank == 0 and val_paths:
            _write_val(out_ckpt, state)
    bar.close()
    if tr.world > 1:
        dist.barrier()
    used = clock() - t_first
    loss_epoch, last, loss_steps = tr.state.last_epoch_loss()
    return DatasetResult(str(out_ckpt), tr.state.epoch, tr.state.step, last, charged() - t0, stopped, loss_epoch,
                         loss_steps, best=state["best"], validation=state["rows"],
                         samples_per_s=n_samples / max(used, 1e-9))


def _take(it: Iterator[VoxelScene], k: int) -> list[VoxelScene] | None:
    out = []
    for _ in range(k):
        x = next(it, None)
        if x is None:
            break
        out.append(x)
    return out or None


def _copy(src: Path, dst: Path) -> None:
    with atomic_write(dst) as tmp, open(src, "rb") as f, open(tmp, "wb") as g:
        while chunk := f.read(1 << 20):
            g.write(chunk)


def _load_val_state(ckpt: Path) -> dict:
    p = ckpt.with_suffix(".val.json")
    if ckpt.exists() and p.is_file():
        try:
            s = json.loads(p.read_text())
            if isinstance(s, dict) and "rows" in s:
                return s
        except ValueError:
            pass
    return {"rows": [], "best": {}}


def _write_val(ckpt: Path, state: dict) -> None:
    """OUT.val.json (rows + best, read back on resume) and OUT.val.csv (the curve is in OUT.loss.png)."""
    with atomic_write(ckpt.with_suffix(".val.json")) as tmp:
        Path(tmp).write_text(json.dumps(state))
    with atomic_write(ckpt.with_suffix(".val.csv")) as tmp:
        with open(tmp, "w") as f:
            f.write("epoch,step,metric,value\n")
            for r in state["rows"]:
                f.write(f"{r['epoch']},{r['step']},{r['metric']},{r['value']}\n")
