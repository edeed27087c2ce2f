"""The optional spconv backend computes the same convolutions as the native one."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("spconv.pytorch")

from pc_ovseg.backbone.sparse import SparseTensor, sparse_conv  # noqa: E402


def _pair(seed=0, grid=10, batch=2, c=4):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand((batch, grid, grid, grid), generator=g) < 0.3
    coords = mask.nonzero().to(torch.int32)
    coords[:, 1:] -= 3  # negative coordinates must work too
    feats = torch.randn(len(coords), c, generator=g)
    return (SparseTensor(feats.clone().requires_grad_(True), coords, backend="native"),
            SparseTensor(feats.clone().requires_grad_(True), coords, backend="spconv"))


def _net(x, w1, w2, w3, w4):
    h = sparse_conv(x, w1)                              # submanifold
    d = sparse_conv(h, w2, stride=2)                    # strided (kernel 2)
    d = sparse_conv(d, w3)                              # submanifold at stride 2
    return sparse_conv(d, w4, stride=2, transposed=True)  # back to the input sites


def test_backends_agree_forward_and_backward():
    a, b = _pair()
    g = torch.Generator().manual_seed(1)
    ws = [torch.randn(27, 4, 6, generator=g), torch.randn(8, 6, 5, generator=g), torch.randn(27, 5, 3, generator=g),
          torch.randn(8, 3, 2, generator=g)]
    wa = [w.clone().requires_grad_(True) for w in ws]
    wb = [w.clone().requires_grad_(True) for w in ws]
    ya, yb = _net(a, *wa), _net(b, *wb)
    assert torch.equal(ya.coords, yb.coords)
    torch.testing.assert_close(ya.feats, yb.feats, rtol=1e-4, atol=1e-4)
    ya.feats.square().sum().backward()
    yb.feats.square().sum().backward()
    for p, q in [(a.feats, b.feats), *zip(wa, wb)]:  # float32 sums of ~1e6: compare relative to the scale
        scale = p.grad.abs().max()
        torch.testing.assert_close(p.grad / scale, q.grad / scale, rtol=0, atol=1e-5)


def test_backends_agree_on_minkunet():
    from pc_ovseg.backbone.model import MinkUNet, unet_spec
    model = MinkUNet(unet_spec("MinkUNet18A", in_channels=4, out_channels=5, planes=(4, 6, 8, 8, 6, 6, 4, 4),
                               init_dim=4)).eval()
    a, b = _pair(seed=2, grid=16)
    with torch.no_grad():
        ya, yb = model(a).feats, model(b).feats
    torch.testing.assert_close(ya, yb, rtol=1e-4, atol=1e-4)
