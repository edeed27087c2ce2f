"""Sparse 3D convolution in plain PyTorch over kernel maps built by the native extension.

Why our own: MinkowskiEngine has no wheels and spconv is wrong on multi-threaded CPU, while a
gather -> matmul -> scatter-add per kernel offset is exact, installs with pip and runs on CUDA
tensors unchanged (maps are built on the CPU once per coordinate set and moved).

Conventions
-----------
* ``SparseTensor.coords`` (M,4) int32 rows (batch, x, y, z) in units of the finest voxel; a
  tensor at ``stride`` s holds multiples of s (as MinkowskiEngine does).
* Weights are (K^3, Cin, Cout). Offset k = (i*K + j)*K + l over per-axis steps (i: x, j: y,
  l: z; the LAST axis runs fastest, i.e. a C-order reshape of a dense (K,K,K) kernel). Odd K
  steps are centred, even K steps run 0..K-1. So ``W[k] = dense_weight[:, :, i, j, l].T`` for
  ``torch.nn.functional.conv3d`` with padding K//2 (odd K) / 0 (even K, stride K).
* Strided conv: output coords = unique(floor(coords / (s*stride)) * (s*stride)).
  Transposed conv maps back onto the cached finer coords with the same pairs, swapped.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .. import native

__all__ = ["SparseTensor", "CoordinateManager", "KernelMap", "sparse_conv", "SparseConv3d",
           "SparseConvTranspose3d", "SparseBatchNorm", "SparseReLU", "SparsePool3d", "cat",
           "kernel_steps"]


def kernel_steps(kernel_size: int) -> np.ndarray:
    """(K^3, 3) per-axis integer steps in the library's offset order (last axis fastest)."""
    k = int(kernel_size)
    lo = -(k - 1) // 2 if k % 2 else 0
    r = np.arange(k) + lo
    g = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1)
    return g.reshape(-1, 3).astype(np.int32)


@dataclass
class KernelMap:
    """Neighbour pairs of one convolution: for offset k, ``in_rows[a:b] -> out_rows[a:b]``."""

    in_rows: torch.Tensor            # (P,) int64
    out_rows: torch.Tensor           # (P,) int64
    offsets: list[int]               # K^3 + 1 boundaries
    n_in: int
    n_out: int
    identity: int = -1               # offset whose pairs are row i -> row i for all rows

    def to(self, device) -> "KernelMap":
        if self.in_rows.device == torch.device(device):
            return self
        return KernelMap(self.in_rows.to(device), self.out_rows.to(device), self.offsets,
                         self.n_in, self.n_out, self.identity)

    def transposed(self) -> "KernelMap":
        return KernelMap(self.out_rows, self.in_rows, self.offsets, self.n_out, self.n_in, self.identity)

    @property
    def n_pairs(self) -> int:
        return self.offsets[-1]


class CoordinateManager:
    """Coordinate sets per stride and kernel maps per (stride, kernel), each computed once.

    One manager is shared by every tensor derived from the same input, so a U-Net builds each
    map once in its encoder and reuses it (swapped) in its decoder.
    """

    def __init__(self, coords: torch.Tensor, backend: str = "native"):
        if backend not in CONV_BACKENDS:
            raise ValueError(f"unknown sparse backend {backend!r}; choose from {sorted(CONV_BACKENDS)}")
        self.backend = backend
        self.device = coords.device
        c = coords.detach().to("cpu", torch.int32).contiguous()
        self._coords: dict[int, np.ndarray] = {1: c.numpy()}
        self._coords_t: dict[int, torch.Tensor] = {1: coords}
        self._maps: dict[tuple, KernelMap] = {}
        self._inverse: dict[tuple[int, int], torch.Tensor] = {}

    def coords(self, stride: int) -> torch.Tensor:
        if stride not in self._coords_t:
            self._coords_t[stride] = torch.from_numpy(self.coords_np(stride)).to(self.device)
        return self._coords_t[stride]

    def coords_np(self, stride: int) -> np.ndarray:
        if stride not in self._coords:
            finer = max(s for s in self._coords if stride % s == 0)
            out, inv = native.sparse_downsample(self._coords[finer], stride)
            self._coords[stride] = out
            self._inverse[(finer, stride)] = torch.from_numpy(inv)
        return self._coords[stride]

    def kernel_map(self, in_stride: int, out_stride: int, kernel_size: int) -> KernelMap:
        """Pairs for a conv from ``in_stride`` to ``out_stride`` >= in_stride (dilation = in_stride)."""
        key = (in_stride, out_stride, kernel_size)
        km = self._maps.get(key)
        if km is None:
            cin, cout = self.coords_np(in_stride), self.coords_np(out_stride)
            i, o, off = native.sparse_kernel_map(cin, cout, kernel_size, in_stride)
            off = off.tolist()
            ident = -1
            if in_stride == out_stride and kernel_size % 2 == 1:
                centre = (kernel_size ** 3) // 2
                if off[centre + 1] - off[centre] == len(cin):  # every row hits itself
                    ident = centre
            km = KernelMap(torch.from_numpy(i).to(self.device), torch.from_numpy(o).to(self.device), off,
                           len(cin), len(cout), ident)
            self._maps[key] = km
        return km


class SparseTensor:
    """Features on active voxels: ``coords`` (M,4) int32 (batch, x, y, z), ``feats`` (M,C)."""

    def __init__(self, feats: torch.Tensor, coords: torch.Tensor | None = None, stride: int = 1,
                 manager: CoordinateManager | None = None, backend: str = "native"):
        if manager is None:
            if coords is None:
                raise ValueError("SparseTensor needs coords or a coordinate manager")
            if stride != 1:
                raise ValueError("a new coordinate set starts at stride 1")
            coords = coords.to(torch.int32)
            if coords.ndim != 2 or coords.shape[1] != 4:
                raise ValueError(f"coords must have shape (M, 4), got {tuple(coords.shape)}")
            manager = CoordinateManager(coords, backend)
        self.feats = feats
        self.stride = int(stride)
        self.manager = manager
        if len(feats) != len(self.coords):
            raise ValueError(f"{len(feats)} feature rows for {len(self.coords)} coordinates")

    @property
    def coords(self) -> torch.Tensor:
        return self.manager.coords(self.stride)

    @property
    def device(self) -> torch.device:
        return self.feats.device

    def replace(self, feats: torch.Tensor) -> "SparseTensor":
        """Same coordinates, new features."""
        return SparseTensor(feats, stride=self.stride, manager=self.manager)

    def dense(self, shape: tuple[int, int, int], batch_size: int = 1) -> torch.Tensor:
        """(B, C, X, Y, Z) dense volume (zeros elsewhere), coords // stride as indices; for tests."""
        c = self.coords.long()
        out = self.feats.new_zeros((batch_size, self.feats.shape[1], *shape))
        s = self.stride
        out[c[:, 0], :, c[:, 1] // s, c[:, 2] // s, c[:, 3] // s] = self.feats
        return out

    def __len__(self) -> int:
        return len(self.feats)

    def __repr__(self) -> str:
        return f"SparseTensor(n={len(self)}, channels={self.feats.shape[1]}, stride={self.stride})"


def _scatter_add(out: torch.Tensor, rows: torch.Tensor, src: torch.Tensor) -> None:
    """out[rows] += src for rows unique within one offset: native threaded loop on the CPU."""
    if out.device.type == "cpu" and out.dtype in (torch.float32, torch.float64) and src.dtype == out.dtype:
        native.scatter_add_rows(out.numpy(), rows.numpy(), src.contiguous().numpy())
    else:
        out.index_add_(0, rows, src)


class _SparseConvFn(torch.autograd.Function):
    """out[o] = sum_k sum_{(i,o) in pairs_k} x[i] @ W[k]; saves only x, W and the pairs.

    Gathered rows and products go to two buffers sized for the largest offset, allocated once
    per call: fresh per-offset tensors of tens of MB cost a page-fault storm on the CPU.
    """

    @staticmethod
    def forward(ctx, feats: torch.Tensor, weight: torch.Tensor, km: KernelMap) -> torch.Tensor:
        w = weight.to(feats.dtype)
        off = km.offsets
        if km.identity >= 0:
            out = feats @ w[km.identity]
        else:
            out = feats.new_zeros((km.n_out, w.shape[2]))
        sizes = [off[k + 1] - off[k] if k != km.identity else 0 for k in range(w.shape[0])]
        maxp = max(sizes, default=0)
        if maxp:
            gbuf = feats.new_empty((maxp, w.shape[1]))
            pbuf = feats.new_empty((maxp, w.shape[2]))
            for k, n in enumerate(sizes):
                if n == 0:
                    continue
                a, b = off[k], off[k + 1]
                torch.index_select(feats, 0, km.in_rows[a:b], out=gbuf[:n])
                torch.mm(gbuf[:n], w[k], out=pbuf[:n])
                _scatter_add(out, km.out_rows[a:b], pbuf[:n])
        ctx.save_for_backward(feats, weight)
        ctx.km = km
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        feats, weight = ctx.saved_tensors
        km: KernelMap = ctx.km
        grad_out = grad_out.contiguous().to(feats.dtype)
        w = weight.to(feats.dtype)
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        gx = torch.zeros_like(feats) if need_x else None
        gw = torch.zeros(weight.shape, dtype=torch.float32 if feats.dtype == torch.float16 else weight.dtype,
                         device=weight.device) if need_w else None
        off = km.offsets
        sizes = [off[k + 1] - off[k] if k != km.identity else 0 for k in range(w.shape[0])]
        maxp = max(sizes, default=0)
        cin, cout = w.shape[1], w.shape[2]
        if maxp:
            gbuf = feats.new_empty((maxp, cout))
            xbuf = feats.new_empty((maxp, cin)) if need_w else None
            pbuf = feats.new_empty((maxp, cin)) if need_x else None
        for k in range(w.shape[0]):
            a, b = off[k], off[k + 1]
            n = b - a
            if n == 0:
                continue
            if k == km.identity:
                g, x = grad_out, feats
                if need_x:
                    gx.addmm_(g, w[k].t())
            else:
                g = torch.index_select(grad_out, 0, km.out_rows[a:b], out=gbuf[:n])
                x = torch.index_select(feats, 0, km.in_rows[a:b], out=xbuf[:n]) if need_w else None
                if need_x:
                    _scatter_add(gx, km.in_rows[a:b], torch.mm(g, w[k].t(), out=pbuf[:n]))
            if need_w:
                if gw.dtype == x.dtype:
                    torch.mm(x.t(), g, out=gw[k])
                else:  # half features: sum over up to ~1e5 rows in float32 (fp16 output overflows)
                    gw[k] = x.t().float() @ g.float()
        return gx, None if gw is None else gw.to(weight.dtype), None


def sparse_conv(x: SparseTensor, weight: torch.Tensor, *, stride: int = 1, transposed: bool = False) -> SparseTensor:
    """Submanifold (stride 1), strided (stride > 1) or transposed convolution of ``x``.

    ``weight`` is (K^3, Cin, Cout) with K = round(cbrt(K^3)). A transposed conv goes from
    ``x.stride`` to ``x.stride // stride`` using the finer coordinates already in the manager.
    The computation is done by the backend of ``x``'s coordinate manager (CONV_BACKENDS).
    """
    k3, cin, _ = weight.shape
    k = int(round(k3 ** (1 / 3)))
    if k ** 3 != k3:
        raise ValueError(f"weight has {k3} offsets, not a cube")
    if x.feats.shape[1] != cin:
        raise ValueError(f"input has {x.feats.shape[1]} channels, weight expects {cin}")
    if transposed and x.stride % stride:
        raise ValueError(f"cannot transpose stride {stride} from tensor stride {x.stride}")
    if k == 1 and stride == 1:  # pointwise: no neighbours, no kernel map
        return x.replace(x.feats @ weight[0].to(x.feats.dtype))
    return CONV_BACKENDS[x.manager.backend](x, weight, k, stride, transposed)


def _native_conv(x: SparseTensor, weight: torch.Tensor, k: int, stride: int, transposed: bool) -> SparseTensor:
    m = x.manager
    if transposed:
        out_stride = x.stride // stride
        km = m.kernel_map(out_stride, x.stride, k).transposed()
    else:
        out_stride = x.stride * stride
        km = m.kernel_map(x.stride, out_stride, k)
    km = km.to(x.device)
    feats = x.feats
    if feats.is_cuda and torch.is_autocast_enabled("cuda"):  # AMP: gather/matmul/scatter in half
        feats = feats.to(torch.get_autocast_dtype("cuda"))
    feats = _SparseConvFn.apply(feats, weight, km)
    return SparseTensor(feats, stride=out_stride, manager=m)


def _spconv_conv(*args) -> SparseTensor:
    from .spconv_backend import spconv_conv  # optional dependency, imported on first use
    return spconv_conv(*args)


#: name -> fn(x, weight, kernel_size, stride, transposed); selected per coordinate manager.
CONV_BACKENDS = {"native": _native_conv, "spconv": _spconv_conv}


def _init_weight(k3: int, cin: int, cout: int) -> torch.Tensor:
    w = torch.empty(k3, cin, cout)
    bound = 1.0 / np.sqrt(k3 * cin)  # kaiming-uniform(a=sqrt(5)) as torch conv3d does
    return nn.init.uniform_(w, -bound, bound)


class SparseConv3d(nn.Module):
    """Sparse conv; ``stride`` 1 is submanifold (output sites = input sites)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, bias: bool = False):
        super().__init__()
        self.kernel_size, self.stride = int(kernel_size), int(stride)
        self.weight = nn.Parameter(_init_weight(self.kernel_size ** 3, in_channels, out_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: SparseTensor) -> SparseTensor:
        y = sparse_conv(x, self.weight, stride=self.stride)
        return y if self.bias is None else y.replace(y.feats + self.bias.to(y.feats.dtype))

    def extra_repr(self) -> str:
        k3, cin, cout = self.weight.shape
        return f"{cin}, {cout}, kernel_size={self.kernel_size}, stride={self.stride}, bias={self.bias is not None}"


class SparseConvTranspose3d(SparseConv3d):
    """Transposed sparse conv: back onto the finer coordinates the matching strided conv came from."""

    def forward(self, x: SparseTensor) -> SparseTensor:
        y = sparse_conv(x, self.weight, stride=self.stride, transposed=True)
        return y if self.bias is None else y.replace(y.feats + self.bias.to(y.feats.dtype))


class SparseBatchNorm(nn.BatchNorm1d):
    """Batch norm over active voxels."""

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        return x.replace(super().forward(x.feats))


class SparseSyncBatchNorm(SparseBatchNorm):
    """Batch norm whose statistics are summed over all processes of the torchrun group.

    torch's ``nn.SyncBatchNorm`` refuses CPU tensors, so this one all-reduces (count, sum, sum of
    squares) itself through ``torch.distributed.nn`` (differentiable; gloo and NCCL). Same
    parameters and buffers as :class:`SparseBatchNorm`, so checkpoints are interchangeable; outside
    a process group (or in eval mode) it is a plain batch norm.
    """

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        import torch.distributed as dist
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce
        f = x.feats
        f32 = f.float()
        C = f.shape[1]
        n = torch.full((1,), float(f.shape[0]), device=f.device)
        stats = all_reduce(torch.cat([f32.sum(0), (f32 * f32).sum(0), n]))
        count = stats[-1].clamp_min(1)
        mean = stats[:C] / count
        var = (stats[C:2 * C] / count - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                unbiased = var.detach() * count / (count - 1).clamp_min(1)
                self.running_var.mul_(1 - m).add_(m * unbiased)
                self.num_batches_tracked.add_(1)
        y = (f32 - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            y = y * self.weight + self.bias
        return x.replace(y.to(f.dtype))


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every :class:`SparseBatchNorm` of ``module`` by a :class:`SparseSyncBatchNorm`
    (weights and running statistics kept)."""
    if isinstance(module, SparseBatchNorm) and not isinstance(module, SparseSyncBatchNorm):
        new = SparseSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                  module.track_running_stats)
        new.load_state_dict(module.state_dict())
        return new
    for name, child in module.named_children():
        setattr(module, name, convert_sync_batchnorm(child))
    return module


class SparseReLU(nn.ReLU):
    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        return x.replace(super().forward(x.feats))


class SparsePool3d(nn.Module):
    """Max or average pooling over a kernel window; stride > 1 downsamples like a strided conv."""

    def __init__(self, kernel_size: int = 2, stride: int = 2, mode: str = "max"):
        super().__init__()
        if mode not in ("max", "avg"):
            raise ValueError(f"pooling mode must be 'max' or 'avg', got {mode!r}")
        self.kernel_size, self.stride, self.mode = int(kernel_size), int(stride), mode

    def forward(self, x: SparseTensor) -> SparseTensor:
        m = x.manager
        out_stride = x.stride * self.stride
        km = m.kernel_map(x.stride, out_stride, self.kernel_size).to(x.device)
        src = x.feats.index_select(0, km.in_rows)
        idx = km.out_rows[:, None].expand(-1, src.shape[1])
        out = x.feats.new_zeros((km.n_out, src.shape[1]))
        reduce = "amax" if self.mode == "max" else "mean"
        out = out.scatter_reduce(0, idx, src, reduce=reduce, include_self=False)
        return SparseTensor(out, stride=out_stride, manager=m)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, mode={self.mode}"


def cat(*xs: SparseTensor) -> SparseTensor:
    """Channel concatenation of tensors on the same coordinates (U-Net skip connections)."""
    first = xs[0]
    for x in xs[1:]:
        if x.manager is not first.manager or x.stride != first.stride:
            raise ValueError("cat needs tensors on the same coordinates")
    return first.replace(torch.cat([x.feats for x in xs], 1))
