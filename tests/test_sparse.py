"""Exactness of the sparse convolutions against dense torch conv3d / conv_transpose3d."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pc_ovseg.backbone.sparse import SparsePool3d, SparseTensor, kernel_steps, sparse_conv


def random_sparse(grid: int = 6, batch: int = 2, channels: int = 3, density: float = 0.3, seed: int = 0,
                  dtype=torch.float64) -> SparseTensor:
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand((batch, grid, grid, grid), generator=g) < density
    coords = mask.nonzero().to(torch.int32)
    perm = torch.randperm(len(coords), generator=g)  # order must not matter
    coords = coords[perm]
    feats = torch.randn(len(coords), channels, generator=g, dtype=dtype)
    return SparseTensor(feats, coords)


def dense_weight(w: torch.Tensor) -> torch.Tensor:
    """(K^3, Cin, Cout) in library order -> conv3d's (Cout, Cin, K, K, K)."""
    k = round(w.shape[0] ** (1 / 3))
    return w.reshape(k, k, k, w.shape[1], w.shape[2]).permute(4, 3, 0, 1, 2)


def at_sites(dense: torch.Tensor, x: SparseTensor) -> torch.Tensor:
    c = x.coords.long()
    s = x.stride
    return dense[c[:, 0], :, c[:, 1] // s, c[:, 2] // s, c[:, 3] // s]


def test_kernel_steps_order():
    st = kernel_steps(3)
    assert st.shape == (27, 3)
    assert st[0].tolist() == [-1, -1, -1] and st[1].tolist() == [-1, -1, 0] and st[13].tolist() == [0, 0, 0]
    assert kernel_steps(2)[1].tolist() == [0, 0, 1]


@pytest.mark.parametrize("k", [1, 3, 5])
def test_submanifold_matches_conv3d(k):
    x = random_sparse()
    w = torch.randn(k ** 3, 3, 4, dtype=torch.float64)
    y = sparse_conv(x, w)
    assert torch.equal(y.coords, x.coords) and y.stride == 1
    ref = F.conv3d(x.dense((6, 6, 6), 2), dense_weight(w), padding=k // 2)
    torch.testing.assert_close(y.feats, at_sites(ref, x))


@pytest.mark.parametrize("k", [2, 3])
def test_strided_matches_conv3d(k):
    x = random_sparse(grid=8)
    w = torch.randn(k ** 3, 3, 5, dtype=torch.float64)
    y = sparse_conv(x, w, stride=2)
    assert y.stride == 2
    expect = torch.unique(torch.cat([x.coords[:, :1], x.coords[:, 1:] // 2 * 2], 1), dim=0)
    got = torch.unique(y.coords, dim=0)
    assert torch.equal(got, expect)
    ref = F.conv3d(x.dense((8, 8, 8), 2), dense_weight(w), stride=2, padding=(k - 1) // 2)
    torch.testing.assert_close(y.feats, at_sites(ref, y))


@pytest.mark.parametrize("k", [2, 3])
def test_transposed_matches_conv_transpose3d(k):
    x = random_sparse(grid=8, seed=1)
    down = sparse_conv(x, torch.randn(k ** 3, 3, 3, dtype=torch.float64), stride=2)
    coarse = down.replace(torch.randn(len(down), 4, dtype=torch.float64))
    w = torch.randn(k ** 3, 4, 2, dtype=torch.float64)  # (K^3, Cin coarse, Cout fine)
    y = sparse_conv(coarse, w, stride=2, transposed=True)
    assert y.stride == 1 and torch.equal(y.coords, x.coords)
    # conv_transpose3d weight is (Cin, Cout, K, K, K)
    wt = w.reshape(k, k, k, 4, 2).permute(3, 4, 0, 1, 2)
    pad, op = (k - 1) // 2, (1 if k % 2 else 0)
    ref = F.conv_transpose3d(coarse.dense((4, 4, 4), 2), wt, stride=2, padding=pad, output_padding=op)
    torch.testing.assert_close(y.feats, at_sites(ref, y))


def test_stride2_submanifold_is_dilated():
    x = random_sparse(grid=8, seed=2)
    down = sparse_conv(x, torch.randn(8, 3, 3, dtype=torch.float64), stride=2)
    w = torch.randn(27, 3, 2, dtype=torch.float64)
    y = sparse_conv(down, w)  # neighbours are one coarse voxel (2 fine units) apart
    ref = F.conv3d(down.dense((4, 4, 4), 2), dense_weight(w), padding=1)
    torch.testing.assert_close(y.feats, at_sites(ref, y))


def test_gradcheck_all_conv_types():
    x = random_sparse(grid=4, channels=2, density=0.4, seed=3)
    feats = x.feats.clone().requires_grad_(True)
    ws = [torch.randn(27, 2, 3, dtype=torch.float64, requires_grad=True),
          torch.randn(8, 3, 2, dtype=torch.float64, requires_grad=True),
          torch.randn(8, 2, 2, dtype=torch.float64, requires_grad=True)]

    def net(f, w1, w2, w3):
        h = sparse_conv(x.replace(f), w1)
        h = sparse_conv(h, w2, stride=2)
        return sparse_conv(h, w3, stride=2, transposed=True).feats

    assert torch.autograd.gradcheck(net, (feats, *ws), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_pooling(mode):
    x = random_sparse(grid=6, seed=4)
    y = SparsePool3d(2, 2, mode)(x)
    c = x.coords.long()
    key = torch.cat([c[:, :1], c[:, 1:] // 2], 1)
    for row, yc in enumerate(y.coords.long()):
        members = (key == torch.cat([yc[:1], yc[1:] // 2])).all(1)
        vals = x.feats[members]
        ref = vals.max(0).values if mode == "max" else vals.mean(0)
        torch.testing.assert_close(y.feats[row], ref)


def test_float32_and_kernel_map_cache():
    x = random_sparse(dtype=torch.float32)
    w = torch.randn(27, 3, 3)
    sparse_conv(x, w)
    n = len(x.manager._maps)
    sparse_conv(x, w)
    assert len(x.manager._maps) == n == 1
