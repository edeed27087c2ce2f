"""spconv 2.x as an optional compute backend (``pip install pc_ovseg[spconv]``).

Select it per input: ``SparseTensor(feats, coords, backend="spconv")``; every module of the
model then runs spconv's pair generation and gather-GEMM-scatter with the library's weight
layout (K^3, Cin, Cout), converted on the fly to spconv's (Cout, K, K, K, Cin) with the
input's x, y, z as spconv's three spatial axes.

Two spconv 2.3 problems are patched on import (CPU only):
* its backward calls ``torch.cuda.current_stream()`` even for CPU tensors, which fails on a
  machine without a GPU: the stream lookup returns 0 when the data is on the CPU;
* its ``scatter_add_cpu`` is replaced by ``torch.index_add_`` (deterministic, threaded by
  torch) instead of spconv's own multi-threaded loop.
Strided convolutions are supported for kernel size == stride (what the U-Net uses): other
sizes make spconv's output sites differ from floor(coords / stride).
"""
from __future__ import annotations

import numpy as np
import torch

from .. import native
from .sparse import SparseTensor

_PATCHED = False
_SHIFT_ALIGN = 1 << 12  # coordinates are shifted by a multiple of every stride we use


def _load():
    global _PATCHED
    try:
        import spconv.pytorch as spconv  # noqa: F401
        from spconv.core import ConvAlgo
        from spconv.pytorch import functional as Fsp
        from spconv.pytorch import ops
    except ImportError as exc:  # pragma: no cover - exercised when spconv is absent
        raise ImportError("the spconv backend needs spconv: pip install 'pc_ovseg[spconv]'") from exc
    if not _PATCHED:
        _patch(ops)
        _PATCHED = True
    return ops, Fsp, ConvAlgo


def _patch(ops) -> None:
    from spconv.pytorch import cppcore

    orig_stream = cppcore.get_current_stream

    def get_current_stream():
        return orig_stream() if torch.cuda.is_available() and torch.cuda.is_initialized() else 0

    ops.get_current_stream = get_current_stream

    real = ops.SpconvOps

    class _Ops:
        """SpconvOps with a torch scatter-add on the CPU."""

        def __getattr__(self, name):
            return getattr(real, name)

        @staticmethod
        def scatter_add_cpu(out, src, indices):
            o = torch.from_numpy(out.numpy_view())
            s = torch.from_numpy(src.numpy_view())
            i = torch.from_numpy(indices.numpy_view()).long()
            o.index_add_(0, i, s[: len(i)])

    ops.SpconvOps = _Ops()


def _state(x: SparseTensor) -> dict:
    m = x.manager
    st = getattr(m, "_spconv", None)
    if st is None:
        c = m.coords_np(1)
        lo = (c[:, 1:].min(0) // _SHIFT_ALIGN) * _SHIFT_ALIGN if len(c) else np.zeros(3, np.int64)
        hi = c[:, 1:].max(0) - lo + 1 if len(c) else np.ones(3, np.int64)
        st = {"shift": lo.astype(np.int32), "extent": hi.astype(np.int64),
              "batch": int(c[:, 0].max()) + 1 if len(c) else 1, "pairs": {}}
        m._spconv = st
    return st


def _indices(x: SparseTensor, stride: int, st: dict) -> tuple[torch.Tensor, list[int]]:
    c = x.manager.coords_np(stride).copy()
    c[:, 1:] = (c[:, 1:] - st["shift"]) // stride
    shape = [int(-(-e // stride)) + 1 for e in st["extent"]]
    return torch.from_numpy(c).to(x.device), shape


def _weight(weight: torch.Tensor, k: int) -> torch.Tensor:
    k3, cin, cout = weight.shape
    return weight.reshape(k, k, k, cin, cout).permute(4, 0, 1, 2, 3).contiguous()


def spconv_conv(x: SparseTensor, weight: torch.Tensor, k: int, stride: int, transposed: bool) -> SparseTensor:
    """The CONV_BACKENDS['spconv'] entry: same semantics as the native backend."""
    ops, Fsp, ConvAlgo = _load()
    st = _state(x)
    m = x.manager
    algo = ConvAlgo.Native
    feats = x.feats.contiguous()
    w = _weight(weight, k).to(feats.dtype)
    if stride == 1 and not transposed:
        key = ("subm", x.stride, k)
        if key not in st["pairs"]:
            idx, shape = _indices(x, x.stride, st)
            _, pairs, num = ops.get_indice_pairs(idx, st["batch"], shape, algo, [k] * 3, [1] * 3, [k // 2] * 3,
                                                 [1] * 3, [0] * 3, subm=True)
            st["pairs"][key] = (pairs, num)
        pairs, num = st["pairs"][key]
        out = Fsp.indice_subm_conv(feats, w, pairs, num, len(feats), algo)
        return SparseTensor(out, stride=x.stride, manager=m)
    if k != stride:
        raise NotImplementedError(f"spconv backend: strided/transposed conv needs kernel size == stride, "
                                  f"got kernel {k}, stride {stride}")
    fine = x.stride // stride if transposed else x.stride
    key = ("down", fine, k)
    if key not in st["pairs"]:
        xf = SparseTensor(m.coords(fine).new_zeros((len(m.coords(fine)), 0), dtype=feats.dtype), stride=fine,
                          manager=m) if transposed else x
        idx, shape = _indices(xf, fine, st)
        out_inds, pairs, num = ops.get_indice_pairs(idx, st["batch"], shape, algo, [k] * 3, [stride] * 3,
                                                    [0] * 3, [1] * 3, [0] * 3, subm=False)
        coarse = out_inds.cpu().numpy().astype(np.int32).copy()
        coarse[:, 1:] = coarse[:, 1:] * (fine * stride) + st["shift"]
        perm = _align(m, fine * stride, coarse)
        st["pairs"][key] = (pairs, num, len(coarse), perm)
    pairs, num, n_coarse, perm = st["pairs"][key]
    if transposed:
        # rows of x follow the manager's coarse order; spconv wants its own
        xs = feats if perm is None else feats.new_zeros(feats.shape).index_copy_(0, perm.to(x.device), feats)
        out = Fsp.indice_inverse_conv(xs, w, pairs, num, len(m.coords(fine)), algo)
        return SparseTensor(out, stride=fine, manager=m)
    out = Fsp.indice_conv(feats, w, pairs, num, n_coarse, algo)
    if perm is not None:
        out = out.index_select(0, perm.to(out.device))
    return SparseTensor(out, stride=fine * stride, manager=m)


def _align(m, stride: int, coarse: np.ndarray) -> torch.Tensor | None:
    """Record spconv's coarse sites in the manager, or map them onto ones already there.

    Returns perm with manager row r = spconv row perm[r], or None when the orders agree.
    """
    if stride not in m._coords:
        m._coords[stride] = coarse
        return None
    have = m._coords[stride]
    if len(have) != len(coarse):
        raise RuntimeError(f"spconv produced {len(coarse)} sites at stride {stride}, the manager has {len(have)}")
    if np.array_equal(have, coarse):
        return None
    i, o, _ = native.sparse_kernel_map(coarse, have, 1, 1)  # have[o] == coarse[i]
    perm = np.empty(len(have), np.int64)
    perm[o] = i
    return torch.from_numpy(perm)
