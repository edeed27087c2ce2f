"""Distil fused 2D features into the 3D U-Net (OpenScene's 3D distillation).

Loss: 1 - cosine(prediction, target) on voxels holding at least one point with a fused feature
(weight > 0); a voxel's target is the normalised mean of its seen points' features.
Runs on one CPU/GPU or under ``torchrun`` (DDP: NCCL on GPUs, gloo on CPUs; scenes are split by
rank, rank 0 writes the checkpoint, CSV and PNG loss curve). The checkpoint is rewritten after
every epoch; rerunning with the same output resumes from it.

:func:`distill` composes the steps of :class:`Trainer` (``setup`` -> ``train_epoch`` ->
``save``), so a trainer with other batches (e.g. datasets read from disk) reuses them.
"""
from __future__ import annotations

import csv
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.nn import functional as F

from ..data import FeatureCloud
from ..errors import InputError
from ..store import load_checkpoint, save_checkpoint
from .inputs import Augment, VoxelScene, collate, input_channels, voxelize_scene
from .model import MinkUNet, UNetSpec, unet_spec
from .sparse import SparseTensor

CKPT_FORMAT = "pc_ovseg.distill/1"
LOSS_COLUMNS = ["epoch", "step", "loss", "lr", "started", "seconds"]


@dataclass
class DistillResult:
    checkpoint: str
    epochs: int              # epochs completed in total (including resumed ones)
    steps: int
    last_loss: float         # mean loss of the loss file's last epoch (all its rows)
    seconds: float
    stopped_early: bool      # the time budget ran out
    loss_epoch: int = 0      # the epoch last_loss averages (epochs + 1 when it was cut short)
    loss_steps: int = 0      # its rows in the loss file


@dataclass
class TrainState:
    """What a checkpoint resumes: completed epochs, optimiser steps and one loss row per step."""

    epoch: int = 0
    step: int = 0
    history: list[dict] = field(default_factory=list)

    def last_epoch_loss(self) -> tuple[int, float, int]:
        """(epoch, mean loss, rows) of the loss file's last epoch: the number a run reports."""
        if not self.history:
            return 0, float("nan"), 0
        e = self.history[-1]["epoch"]
        rows = [h["loss"] for h in self.history if h["epoch"] == e]
        return e, float(np.mean(rows)), len(rows)


def select_device(device: str | torch.device | None = None) -> torch.device:
    """'auto'/None -> CUDA when present, else CPU (config.resolve_device checks the rest)."""
    from ..config import resolve_device
    return device if isinstance(device, torch.device) else torch.device(resolve_device(device))


class _Scenes:
    """Feature clouds given as paths (loaded on use) or objects."""

    def __init__(self, items: Sequence[str | os.PathLike | FeatureCloud]):
        if not items:
            raise InputError(None, "distillation needs at least one fused feature file")
        self.items = list(items)
        first = self[0]
        self.dim, self.encoder, self.class_names = first.features.shape[1], first.encoder, first.class_names
        self.has_color = first.cloud.rgb is not None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> FeatureCloud:
        it = self.items[i]
        fc = it if isinstance(it, FeatureCloud) else FeatureCloud.load(it)
        if i and fc.features.shape[1] != getattr(self, "dim", fc.features.shape[1]):
            raise InputError(None if isinstance(it, FeatureCloud) else it,
                             f"features have {fc.features.shape[1]} dimensions, the first file has {self.dim}")
        if not fc.seen.any():
            raise InputError(None if isinstance(it, FeatureCloud) else it, "no point has a fused feature (all weights 0)")
        if fc.basis is not None:
            raise InputError(None if isinstance(it, FeatureCloud) else it,
                             "features are compressed (--compress); distil from a run without it")
        return fc


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def cosine_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (1 - F.cosine_similarity(pred.float(), target.float(), dim=1, eps=1e-8)).mean()


#: loss names: "cosine" (OpenScene's 1 - cos to the fused target), "cosine+contrast" (plus a
#: cross-entropy of cos(pred, vocabulary) / temperature against the target's nearest vocabulary
#: entry), "ce" (supervised upper bound: cross-entropy of the raw outputs on per-voxel GT labels)
LOSSES = ("cosine", "cosine+contrast", "ce")
SCHEDULES = ("cosine", "poly", "constant")


def distill_loss(kind: str, pred: torch.Tensor, target: torch.Tensor | None, valid: torch.Tensor | None,
                 labels: torch.Tensor | None = None, vocab: torch.Tensor | None = None,
                 temperature: float = 0.07, contrast_weight: float = 1.0) -> torch.Tensor:
    """One step's loss over a batch's voxels (see :data:`LOSSES`)."""
    if kind == "ce":
        keep = labels >= 0
        return F.cross_entropy(pred[keep].float(), labels[keep]) if keep.any() else pred.sum() * 0
    if valid is None or not valid.any():
        return pred.sum() * 0
    p, t = pred[valid].float(), target[valid].float()
    loss = cosine_loss(p, t)
    if kind == "cosine+contrast":
        v = F.normalize(vocab.float(), dim=1)
        logits = F.normalize(p, dim=1) @ v.T / temperature
        loss = loss + contrast_weight * F.cross_entropy(logits, (t @ v.T).argmax(1))
    return loss


@dataclass(eq=False)
class Trainer:
    """One run's model, optimiser, cosine schedule, counters and time budget.

    ``setup`` builds it (resuming from ``out_ckpt``), ``train_epoch`` runs optimiser steps over
    the batches it is given and ``save`` writes the checkpoint and loss curve: the steps every
    distillation trainer shares, whatever makes its batches.
    """

    model: MinkUNet
    net: torch.nn.Module                 # the model, or its DDP wrapper
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    state: TrainState
    spec: UNetSpec
    out_ckpt: Path
    epochs: int
    meta: dict                           # stored in the checkpoint: encoder, class names, voxel size, ...
    device: torch.device
    amp: bool
    rank: int = 0
    world: int = 1
    t0: float = 0.0                      # perf_counter at the run's start
    max_minutes: float | None = None
    last_step_s: float = 0.0             # duration of the last step: the estimate of the next one
    clock: Callable[[], float] = time.perf_counter   # what the budget and loss rows' times count
    loss: str = "cosine"                 # one of LOSSES
    vocab: torch.Tensor | None = None    # (C, D) for "cosine+contrast"
    temperature: float = 0.07
    contrast_weight: float = 1.0
    schedule: str = "cosine"             # "cosine": per epoch over `epochs`; "poly"/"constant": per step
    total_steps: int | None = None       # poly: progress = max(step / total_steps, time used / budget)
    base_lr: float = 1e-3
    val_curve: list = field(default_factory=list)   # (step, value) of validations, drawn in the PNG
    val_name: str = ""

    @property
    def deadline(self) -> float | None:
        return None if self.max_minutes is None else self.t0 + 60 * self.max_minutes

    @classmethod
    def setup(cls, spec: UNetSpec, out_ckpt: str | os.PathLike, *, epochs: int, meta: dict, lr: float = 1e-3,
              weight_decay: float = 1e-4, device: str | torch.device | None = None, amp: bool = True,
              resume: bool = True, seed: int = 0, max_minutes: float | None = None,
              t0: float | None = None, clock: Callable[[], float] = time.perf_counter,
              optimizer: str = "adamw", schedule: str = "cosine", total_steps: int | None = None,
              loss: str = "cosine", vocab: np.ndarray | None = None, temperature: float = 0.07,
              contrast_weight: float = 1.0, sync_bn: bool = True) -> "Trainer":
        """Join the torchrun group (if any), build model and AdamW (or Adam), resume from ``out_ckpt``
        when it exists. ``t0`` (a reading of ``clock``: wall time by default, ``time.process_time``
        for CPU-second budgets) is when the run began: loss rows' times and the ``max_minutes``
        budget count from it. Under DDP with ``sync_bn`` the batch norms share their statistics
        across processes (:class:`~pc_ovseg.backbone.sparse.SparseSyncBatchNorm`)."""
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose from {LOSSES}")
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; choose from {SCHEDULES}")
        if loss == "cosine+contrast" and vocab is None:
            raise ValueError("the contrastive loss needs the vocabulary's embeddings (vocab)")
        t0 = clock() if t0 is None else t0
        rank, world, local_rank = _dist_info()
        if world > 1 and not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() and device not in ("cpu",) else "gloo"
            dist.init_process_group(backend)
        dev = select_device(device)
        if dev.type == "cuda" and world > 1:
            dev = torch.device("cuda", local_rank)
            torch.cuda.set_device(dev)
        out_ckpt = Path(out_ckpt)
        torch.manual_seed(seed)
        model = MinkUNet(spec)
        if world > 1 and sync_bn:
            from .sparse import convert_sync_batchnorm
            model = convert_sync_batchnorm(model)
        model = model.to(dev)
        if optimizer == "adam":
            opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        elif optimizer == "adamw":
            opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        else:
            raise ValueError(f"unknown optimizer {optimizer!r}; choose adam or adamw")
        state = _resume(out_ckpt, spec, model, opt) if resume and out_ckpt.exists() else TrainState()
        epoch_factor = ((lambda e: 0.5 * (1 + math.cos(math.pi * min(e, epochs) / max(epochs, 1))))
                        if schedule == "cosine" else (lambda e: 1.0))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, epoch_factor, last_epoch=state.epoch - 1)
        net = model
        if world > 1:
            net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
        use_amp = amp and dev.type == "cuda"
        v = None if vocab is None else torch.as_tensor(np.asarray(vocab, np.float32), device=dev)
        return cls(model, net, opt, sched, torch.amp.GradScaler("cuda", enabled=use_amp), state, spec, out_ckpt,
                   epochs, meta, dev, use_amp, rank, world, t0, max_minutes, clock=clock, loss=loss, vocab=v,
                   temperature=temperature, contrast_weight=contrast_weight, schedule=schedule,
                   total_steps=total_steps, base_lr=lr)

    def progress(self, now: float | None = None) -> float:
        """Share of the run done (0..1): steps of ``total_steps`` or time of the budget, the larger."""
        p = 0.0
        if self.total_steps:
            p = self.state.step / self.total_steps
        if self.max_minutes is not None:
            now = self.clock() if now is None else now
            p = max(p, (now - self.t0) / (60 * self.max_minutes))
        return min(max(p, 0.0), 1.0)

    def _set_step_lr(self, now: float) -> None:
        if self.schedule == "poly":
            f = (1 - self.progress(now)) ** 0.9
        elif self.schedule == "constant":
            f = 1.0
        else:
            return  # per-epoch cosine: LambdaLR
        for g in self.opt.param_groups:
            g["lr"] = self.base_lr * f

    def out_of_time(self, now: float) -> bool:
        """Would a step starting ``now`` end past the deadline, if it takes as long as the last
        one? Agreed by all ranks, so DDP processes stop at the same step."""
        deadline = self.deadline
        late = deadline is not None and now + self.last_step_s > deadline
        return _any_across(late, self.world, self.device)

    def train_epoch(self, batches: Iterable[list[VoxelScene]], bar=None) -> tuple[list[float], bool]:
        """One optimiser step per batch (voxelised scenes with targets; under DDP every rank must
        give as many) -> (step losses, stopped). The deadline is checked before the epoch and
        for each step as of its start, once its batch is made (so a finished epoch is never taken
        for a stopped one); a stopped epoch does not count and does not advance the schedule."""
        self.model.train()
        losses, stopped = [], self.out_of_time(self.clock())
        it = iter(batches)
        while not stopped:
            started = self.clock()
            batch = next(it, None)
            if batch is None:
                break
            if self.out_of_time(started):
                stopped = True
                break
            self._set_step_lr(started)
            losses.append(self._step(batch))
            end = self.clock()
            self.last_step_s = end - started
            s = self.state
            s.step += 1
            s.history.append({"epoch": s.epoch + 1, "step": s.step, "loss": losses[-1],
                              "lr": self.opt.param_groups[0]["lr"], "started": round(started - self.t0, 3),
                              "seconds": round(end - self.t0, 3)})
            if bar is not None:
                budget = "" if self.max_minutes is None else f"/{_mmss(60 * self.max_minutes)}"
                bar.update(1)
                bar.set_postfix_str(f"epoch {s.epoch + 1}/{self.epochs} loss {losses[-1]:.4f} "
                                    f"time {_mmss(end - self.t0)}{budget}")
        if not stopped:
            self.sched.step()
            self.state.epoch += 1
        return losses, stopped

    def _step(self, batch: list[VoxelScene]) -> float:
        dev = self.device
        coords, feats, _ = collate(batch, dev)
        target = valid = labels = None
        if self.loss == "ce":
            if any(b.labels is None for b in batch):
                raise InputError(None, "the supervised loss needs per-point GT labels in every scene")
            labels = torch.from_numpy(np.concatenate([b.labels for b in batch])).to(dev)
        else:
            target = torch.from_numpy(np.concatenate([b.target for b in batch])).to(dev)
            valid = torch.from_numpy(np.concatenate([b.valid for b in batch])).to(dev)
        with torch.autocast(dev.type, dtype=torch.float16, enabled=self.amp):
            pred = self.net(SparseTensor(feats, coords)).feats
        loss = distill_loss(self.loss, pred, target, valid, labels, self.vocab, self.temperature,
                            self.contrast_weight)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        return _mean_across(loss.detach(), self.world)

    def save(self) -> None:
        """Checkpoint (plain data only, so it reloads with weights_only), CSV and PNG; rank 0 writes."""
        if self.rank != 0:
            return
        s = self.state
        save_checkpoint({"format": CKPT_FORMAT, "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                         "spec": self.spec.to_dict(), "epoch": s.epoch, "steps": s.step, "history": s.history,
                         **self.meta}, self.out_ckpt)
        write_loss_curve(s.history, self.out_ckpt.with_suffix(".loss.csv"), self.out_ckpt.with_suffix(".loss.png"),
                         val=self.val_curve, val_name=self.val_name,
                         loss_name={"cosine": "1 - cos", "ce": "cross-entropy"}.get(self.loss, self.loss))


def _resume(path: Path, spec: UNetSpec, model, opt) -> TrainState:
    ck = load_checkpoint(path, what="checkpoint to resume")
    if not isinstance(ck, dict) or ck.get("format") != CKPT_FORMAT or ck.get("spec") != spec.to_dict():
        raise InputError(path, "exists but was trained with another architecture or inputs; "
                         "remove it or choose another --out")
    try:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        return TrainState(int(ck["epoch"]), int(ck.get("steps", 0)), list(ck.get("history", [])))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise InputError(path, f"damaged checkpoint, cannot resume ({type(exc).__name__}); remove it "
                               "or pass --no-resume") from None


def distill(feature_clouds: Sequence[str | os.PathLike | FeatureCloud], out_ckpt: str | os.PathLike, *,
            epochs: int = 100, voxel_size: float = 0.02, use_color: bool = False, inputs: str | None = None,
            arch: str = "MinkUNet18A", lr: float = 1e-3, weight_decay: float = 1e-4, batch_size: int = 2,
            max_minutes: float | None = None, device: str | torch.device | None = None, resume: bool = True,
            augment: Augment | None = Augment(), amp: bool = True, seed: int = 0, progress: bool | None = None,
            model_overrides: dict | None = None) -> DistillResult:
    """Train a MinkUNet to predict the fused features of ``feature_clouds`` from geometry (+colour).

    ``inputs`` names the per-point input features ('ones', 'height', 'color', combined with '+');
    by default 'color' when ``use_color`` else 'ones'. ``model_overrides`` change the
    architecture (e.g. narrower ``planes`` for tests). ``max_minutes`` bounds the wall time: no
    step starts that the last step's duration says would end past it; the checkpoint then holds
    the last finished epoch plus the partial one's weights. ``progress`` (default: stderr is a
    terminal) shows a bar over the steps with loss and time used of the budget.
    """
    t0 = time.perf_counter()
    scenes = _Scenes(feature_clouds)
    inputs = inputs or ("color" if use_color else "ones")
    spec = unet_spec(arch, in_channels=input_channels(inputs), out_channels=scenes.dim, **(model_overrides or {}))
    meta = {"encoder": scenes.encoder, "class_names": scenes.class_names, "voxel_size": voxel_size,
            "inputs": inputs, "arch": arch}
    tr = Trainer.setup(spec, out_ckpt, epochs=epochs, meta=meta, lr=lr, weight_decay=weight_decay, device=device,
                       amp=amp, resume=resume, seed=seed, max_minutes=max_minutes, t0=t0)
    mine = list(range(tr.rank, len(scenes), tr.world)) or [tr.rank % len(scenes)]
    n_steps = math.ceil(math.ceil(len(scenes) / tr.world) / batch_size)  # same on every rank (DDP)
    show = (sys.stderr.isatty() if progress is None else progress) and tr.rank == 0
    from tqdm import tqdm
    bar = tqdm(total=n_steps * max(epochs - tr.state.epoch, 0), desc="distill", unit="step", disable=not show)
    stopped = False
    while tr.state.epoch < epochs and not stopped:
        rng = np.random.default_rng([seed, tr.state.epoch, tr.rank])
        _, stopped = tr.train_epoch(_batches(scenes, mine, n_steps, batch_size, rng, voxel_size, inputs, augment),
                                    bar=bar)
        tr.save()
    bar.close()
    if tr.world > 1:
        dist.barrier()
    loss_epoch, loss, loss_steps = tr.state.last_epoch_loss()
    return DistillResult(str(tr.out_ckpt), tr.state.epoch, tr.state.step, loss, time.perf_counter() - t0,
                         stopped, loss_epoch, loss_steps)


def _batches(scenes: _Scenes, mine: list[int], n_steps: int, batch_size: int, rng: np.random.Generator,
             voxel_size: float, inputs: str, augment: Augment | None):
    """One epoch of augmented, voxelised batches over this rank's scenes, made as they are needed."""
    order = [mine[i] for i in rng.permutation(len(mine))]
    order = (order * (n_steps * batch_size // len(order) + 1))[: n_steps * batch_size]
    for s in range(n_steps):
        batch = []
        for i in order[s * batch_size:(s + 1) * batch_size]:
            fc = scenes[i]
            tr = augment.transform(rng) if augment else None
            batch.append(voxelize_scene(fc.cloud, voxel_size, inputs, transform=tr,
                                        shift=rng.uniform(0, 1, 3) if augment else None,
                                        jitter=augment.jitter if augment else 0.0, rng=rng,
                                        features=fc.features, seen=fc.seen))
        yield batch


def _mmss(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}:{s:02d}"


def _mean_across(v: torch.Tensor, world: int) -> float:
    if world > 1:
        v = v.clone()
        dist.all_reduce(v)
        v /= world
    return float(v)


def _any_across(flag: bool, world: int, dev: torch.device) -> bool:
    if world == 1:
        return flag
    t = torch.tensor([int(flag)], device=dev if dev.type == "cuda" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def write_loss_curve(history: list[dict], csv_path: Path, png_path: Path | None = None, size=(640, 360),
                     val: list | None = None, val_name: str = "", loss_name: str = "1 - cos") -> None:
    """Per-step losses as CSV (``started``/``seconds``: the step's start and end, seconds since the
    run began) and a small PNG line plot (drawn with PIL, no plotting dependency); ``val``
    (step, value) pairs of validations are drawn in blue on their own 0..1 scale."""
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=LOSS_COLUMNS)  # rows of older runs have no "started"
        w.writeheader()
        w.writerows(history)
    if png_path is None or not history:
        return
    from PIL import Image, ImageDraw
    W, H = size
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    pad = 40
    loss = np.array([h["loss"] for h in history], np.float64)
    lo, hi = float(np.nanmin(loss)), float(np.nanmax(loss))
    hi = hi if hi > lo else lo + 1e-6
    xs = pad + (W - 2 * pad) * np.arange(len(loss)) / max(len(loss) - 1, 1)
    ys = H - pad - (H - 2 * pad) * (loss - lo) / (hi - lo)
    d.rectangle([pad, pad, W - pad, H - pad], outline=(180, 180, 180))
    if len(loss) > 1:
        d.line(list(zip(xs.tolist(), ys.tolist())), fill=(200, 60, 40), width=2)
    else:
        d.ellipse([xs[0] - 2, ys[0] - 2, xs[0] + 2, ys[0] + 2], fill=(200, 60, 40))
    d.text((pad, 8), f"training loss ({loss_name}), {len(loss)} steps", fill="black")
    d.text((4, pad - 6), f"{hi:.3f}", fill="black")
    d.text((4, H - pad - 6), f"{lo:.3f}", fill="black")
    d.text((W - pad - 60, H - pad + 8), f"step {history[-1]['step']}", fill="black")
    if val:
        s0, s1 = history[0]["step"], max(history[-1]["step"], history[0]["step"] + 1)
        pts = [(pad + (W - 2 * pad) * (st - s0) / (s1 - s0), H - pad - (H - 2 * pad) * min(max(v, 0.0), 1.0))
               for st, v in val]
        if len(pts) > 1:
            d.line(pts, fill=(40, 80, 200), width=2)
        for x, y in pts:
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=(40, 80, 200))
        d.text((W - pad - 200, 8), f"validation {val_name} (0..1): last {val[-1][1]:.3f}", fill=(40, 80, 200))
    img.save(png_path)
