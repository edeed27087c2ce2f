"""Distil fused 2D features into the 3D U-Net (OpenScene's 3D distillation).

Loss: 1 - cosine(prediction, target) on voxels holding at least one point with a fused feature
(weight > 0); a voxel's target is the normalised mean of its seen points' features.
Runs on one CPU/GPU or under ``torchrun`` (DDP: NCCL on GPUs, gloo on CPUs; scenes are split by
rank, rank 0 writes the checkpoint, CSV and PNG loss curve). The checkpoint is rewritten after
every epoch; rerunning with the same output resumes from it.
"""
from __future__ import annotations

import csv
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.nn import functional as F

from ..data import FeatureCloud
from ..errors import InputError
from ..store import load_checkpoint, save_checkpoint
from .inputs import Augment, collate, input_channels, voxelize_scene
from .model import MinkUNet, unet_spec
from .sparse import SparseTensor

CKPT_FORMAT = "pc_ovseg.distill/1"


@dataclass
class DistillResult:
    checkpoint: str
    epochs: int              # epochs completed in total (including resumed ones)
    steps: int
    last_loss: float
    seconds: float
    stopped_early: bool      # the time budget ran out


def select_device(device: str | torch.device | None = None) -> torch.device:
    """'auto'/None -> CUDA when present, else CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


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
        return fc


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def cosine_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (1 - F.cosine_similarity(pred.float(), target.float(), dim=1, eps=1e-8)).mean()


def distill(feature_clouds: Sequence[str | os.PathLike | FeatureCloud], out_ckpt: str | os.PathLike, *,
            epochs: int = 100, voxel_size: float = 0.02, use_color: bool = False, inputs: str | None = None,
            arch: str = "MinkUNet18A", lr: float = 1e-3, weight_decay: float = 1e-4, batch_size: int = 2,
            max_minutes: float | None = None, device: str | torch.device | None = None, resume: bool = True,
            augment: Augment | None = Augment(), amp: bool = True, seed: int = 0, progress: bool | None = None,
            model_overrides: dict | None = None) -> DistillResult:
    """Train a MinkUNet to predict the fused features of ``feature_clouds`` from geometry (+colour).

    ``inputs`` names the per-point input features ('ones', 'height', 'color', combined with '+');
    by default 'color' when ``use_color`` else 'ones'. ``model_overrides`` change the
    architecture (e.g. narrower ``planes`` for tests). ``max_minutes`` bounds the wall time; the
    checkpoint then holds the last finished epoch plus the partial one's weights.
    """
    t0 = time.perf_counter()
    rank, world, local_rank = _dist_info()
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and device not in ("cpu",) else "gloo"
        dist.init_process_group(backend)
    dev = select_device(device)
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    scenes = _Scenes(feature_clouds)
    inputs = inputs or ("color" if use_color else "ones")
    out_ckpt = Path(out_ckpt)

    torch.manual_seed(seed)
    spec = unet_spec(arch, in_channels=input_channels(inputs), out_channels=scenes.dim, **(model_overrides or {}))
    model = MinkUNet(spec).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    start_epoch, history, step = 0, [], 0
    if resume and out_ckpt.exists():
        ck = load_checkpoint(out_ckpt, what="checkpoint to resume")
        if not isinstance(ck, dict) or ck.get("format") != CKPT_FORMAT or ck.get("spec") != spec.to_dict():
            raise InputError(out_ckpt, "exists but was trained with another architecture or inputs; "
                             "remove it or choose another --out")
        try:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            start_epoch, history, step = int(ck["epoch"]), list(ck.get("history", [])), int(ck.get("steps", 0))
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise InputError(out_ckpt, f"damaged checkpoint, cannot resume ({type(exc).__name__}); remove it "
                                       "or pass --no-resume") from None
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda e: 0.5 * (1 + math.cos(math.pi * min(e, epochs) / max(epochs, 1))), last_epoch=start_epoch - 1)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    use_amp = amp and dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    mine = list(range(rank, len(scenes), world)) or [rank % len(scenes)]
    n_steps = math.ceil(math.ceil(len(scenes) / world) / batch_size)  # same on every rank (DDP)
    show = (sys.stderr.isatty() if progress is None else progress) and rank == 0
    deadline = None if max_minutes is None else t0 + 60 * max_minutes
    last_loss, stopped = float("nan"), False
    meta = {"encoder": scenes.encoder, "class_names": scenes.class_names, "voxel_size": voxel_size,
            "inputs": inputs, "arch": arch}
    done = start_epoch
    from tqdm import tqdm
    for epoch in range(start_epoch, epochs):
        rng = np.random.default_rng([seed, epoch, rank])
        order = [mine[i] for i in rng.permutation(len(mine))]
        order = (order * (n_steps * batch_size // len(order) + 1))[: n_steps * batch_size]
        model.train()
        losses = []
        bar = tqdm(range(n_steps), desc=f"distill epoch {epoch + 1}/{epochs}", disable=not show, leave=False)
        for s in bar:
            batch = []
            for i in order[s * batch_size:(s + 1) * batch_size]:
                fc = scenes[i]
                tr = augment.transform(rng) if augment else None
                batch.append(voxelize_scene(fc.cloud, voxel_size, inputs, transform=tr,
                                            shift=rng.uniform(0, 1, 3) if augment else None,
                                            jitter=augment.jitter if augment else 0.0, rng=rng,
                                            features=fc.features, seen=fc.seen))
            coords, feats, _ = collate(batch, dev)
            target = torch.from_numpy(np.concatenate([b.target for b in batch])).to(dev)
            valid = torch.from_numpy(np.concatenate([b.valid for b in batch])).to(dev)
            with torch.autocast(dev.type, dtype=torch.float16, enabled=use_amp):
                pred = net(SparseTensor(feats, coords)).feats
            loss = cosine_loss(pred[valid], target[valid]) if valid.any() else pred.sum() * 0
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            step += 1
            lv = _mean_across(loss.detach(), world)
            losses.append(lv)
            history.append({"epoch": epoch + 1, "step": step, "loss": lv, "lr": opt.param_groups[0]["lr"],
                            "seconds": round(time.perf_counter() - t0, 2)})
            bar.set_postfix(loss=f"{lv:.4f}")
            if deadline is not None and _any_across(time.perf_counter() > deadline, world, dev):
                stopped = True
                break
        last_loss = float(np.mean(losses)) if losses else last_loss
        if not stopped:
            sched.step()
        done = epoch + (0 if stopped else 1)
        if rank == 0:
            _save(out_ckpt, model, opt, spec, done, step, history, meta)
            write_loss_curve(history, out_ckpt.with_suffix(".loss.csv"), out_ckpt.with_suffix(".loss.png"))
        if stopped:
            break
    if world > 1:
        dist.barrier()
    return DistillResult(str(out_ckpt), done, step, last_loss, time.perf_counter() - t0, stopped)


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


def _save(path: Path, model, opt, spec, epoch: int, steps: int, history: list, meta: dict) -> None:
    """Plain data only (tensors, numbers, strings, lists, dicts): it reloads with weights_only."""
    save_checkpoint({"format": CKPT_FORMAT, "model": model.state_dict(), "optimizer": opt.state_dict(),
                     "spec": spec.to_dict(), "epoch": epoch, "steps": steps, "history": history, **meta}, path)


def write_loss_curve(history: list[dict], csv_path: Path, png_path: Path | None = None, size=(640, 360)) -> None:
    """Per-step losses as CSV and a small PNG line plot (drawn with PIL, no plotting dependency)."""
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["epoch", "step", "loss", "lr", "seconds"])
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
    d.text((pad, 8), f"distillation loss (1 - cos), {len(loss)} steps", fill="black")
    d.text((4, pad - 6), f"{hi:.3f}", fill="black")
    d.text((4, H - pad - 6), f"{lo:.3f}", fill="black")
    d.text((W - pad - 60, H - pad + 8), f"step {history[-1]['step']}", fill="black")
    img.save(png_path)
