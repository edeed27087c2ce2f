"""Import OpenScene's released MinkUNet checkpoints (MinkowskiEngine layout) without MinkowskiEngine.

OpenScene saves ``{'state_dict': {'module.net3d.conv0p1s1.kernel': ..., 'module.net3d.bn0.bn.weight': ...}}``.
MinkowskiEngine kernels are (K^3, Cin, Cout) -- (Cin, Cout) for 1^3 kernels -- with offsets
ordered FIRST spatial axis fastest: index = i + K*j + K^2*l for per-axis steps (i: x, j: y, l: z).
Ours run the LAST axis fastest (index = (i*K + j)*K + l), so each kernel is reordered by
reshaping to (l, j, i) and transposing to (i, j, l). Both libraries use the same steps (odd K
centred, even K from 0) and the same pair direction (input = output + step; a transposed conv
reuses its strided conv's pairs), so nothing else changes.
"""
from __future__ import annotations

import os

import torch

from ..errors import InputError
from ..store import load_checkpoint
from .model import MinkUNet, UNetSpec

_PREFIXES = ("module.", "net3d.")


def me_to_ours_kernel(kernel: torch.Tensor) -> torch.Tensor:
    """MinkowskiEngine (K^3, Cin, Cout) or (Cin, Cout) -> (K^3, Cin, Cout) in our offset order."""
    if kernel.ndim == 2:
        return kernel.unsqueeze(0).contiguous()
    k3, cin, cout = kernel.shape
    k = round(k3 ** (1 / 3))
    if k ** 3 != k3:
        raise ValueError(f"kernel with {k3} offsets is not a cube")
    return kernel.reshape(k, k, k, cin, cout).permute(2, 1, 0, 3, 4).reshape(k3, cin, cout).contiguous()


def ours_to_me_kernel(weight: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`me_to_ours_kernel` (1^3 kernels become (Cin, Cout))."""
    k3, cin, cout = weight.shape
    if k3 == 1:
        return weight[0].contiguous()
    k = round(k3 ** (1 / 3))
    return weight.reshape(k, k, k, cin, cout).permute(2, 1, 0, 3, 4).reshape(k3, cin, cout).contiguous()


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in _PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


def convert_state_dict(me_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename MinkowskiEngine keys and reorder kernels; other keys pass through unchanged."""
    out: dict[str, torch.Tensor] = {}
    for key, value in me_state.items():
        k = _strip(key)
        if k.endswith(".kernel"):
            out[k[: -len(".kernel")] + ".weight"] = me_to_ours_kernel(value)
        elif ".bn." in k:  # MinkowskiBatchNorm wraps nn.BatchNorm1d as .bn
            out[k.replace(".bn.", ".")] = value
        else:
            out[k] = value
    return out


def convert_openscene_checkpoint(path: str | os.PathLike, ckpt=None) -> dict[str, torch.Tensor]:
    """OpenScene / MinkowskiEngine checkpoint file (or its loaded content) -> state dict for :class:`MinkUNet`."""
    if ckpt is None:
        ckpt = load_checkpoint(path, what="OpenScene checkpoint")
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not any(str(k).endswith("conv0p1s1.kernel") for k in state):
        raise InputError(path, "neither a pc_ovseg distillation checkpoint nor an OpenScene/MinkowskiEngine "
                               "MinkUNet checkpoint (no conv0p1s1.kernel)")
    return convert_state_dict(state)


def spec_from_state_dict(state: dict[str, torch.Tensor]) -> UNetSpec:
    """Infer in/out channels, widths and depths from converted weights."""
    w0 = state["conv0p1s1.weight"]
    planes, layers = [], []
    for level in range(1, 9):
        blocks = sorted({int(k.split(".")[1]) for k in state if k.startswith(f"block{level}.")})
        layers.append(len(blocks))
        planes.append(state[f"block{level}.0.conv1.weight"].shape[2])
    return UNetSpec(in_channels=w0.shape[1], out_channels=state["final.weight"].shape[2], planes=tuple(planes),
                    layers=tuple(layers), init_dim=w0.shape[2], init_kernel=round(w0.shape[0] ** (1 / 3)))


def load_openscene(path: str | os.PathLike, state=None) -> MinkUNet:
    """A ready :class:`MinkUNet` with an OpenScene checkpoint's weights (eval mode); ``state`` is
    the file's already loaded content, when the caller has it."""
    state = convert_openscene_checkpoint(path, state)
    model = MinkUNet(spec_from_state_dict(state))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise InputError(path, f"checkpoint does not match MinkUNet: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model.eval()
