"""MinkUNet on the sparse backend and the OpenScene (MinkowskiEngine) checkpoint import."""
from __future__ import annotations

import numpy as np
import torch

from pc_ovseg.backbone.convert import (convert_openscene_checkpoint, load_openscene, me_to_ours_kernel,
                                       ours_to_me_kernel)
from pc_ovseg.backbone.model import MinkUNet, unet_spec
from pc_ovseg.backbone.sparse import SparseTensor, kernel_steps, sparse_conv

TINY = dict(planes=(4, 6, 8, 8, 6, 6, 4, 4), init_dim=4, init_kernel=3)


def _cloud_coords(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = torch.unique(torch.randint(-8, 8, (n, 3), generator=g), dim=0)
    return torch.cat([torch.zeros(len(c), 1, dtype=c.dtype), c], 1).int()


def test_minkunet18a_shapes_and_output():
    spec = unet_spec("MinkUNet18A", in_channels=3, out_channels=16, **TINY)
    model = MinkUNet(spec)
    coords = _cloud_coords()
    y = model(SparseTensor(torch.randn(len(coords), 3), coords))
    assert y.feats.shape == (len(coords), 16) and torch.equal(y.coords, coords)
    # OpenScene's MinkUNet18A: two BasicBlocks per level, widths 32..96, 5^3 stem
    full = MinkUNet(unet_spec("MinkUNet18A", out_channels=768))
    sd = full.state_dict()
    assert sd["conv0p1s1.weight"].shape == (125, 3, 32)
    assert sd["block4.1.conv2.weight"].shape == (27, 256, 256)
    assert sd["block8.0.conv1.weight"].shape == (27, 96 + 32, 96)
    assert sd["final.weight"].shape == (1, 96, 768)
    # each kernel map is built once per forward pass (encoder maps reused by the decoder)
    assert len(y.manager._maps) == 1 + 4 + 4  # stem 3^3 and blocks at 5 strides share per-stride maps


def _me_state(model: MinkUNet) -> dict:
    """What OpenScene would save for this architecture (MinkowskiEngine names and layout)."""
    out = {}
    for k, v in model.state_dict().items():
        mod, _, leaf = k.rpartition(".")
        if leaf == "weight" and v.ndim == 3:
            out[f"module.net3d.{mod}.kernel"] = ours_to_me_kernel(v)
        elif leaf == "bias" and mod == "final":
            out[f"module.net3d.{k}"] = v
        else:
            out[f"module.net3d.{mod}.bn.{leaf}"] = v
    return {"state_dict": out, "epoch": 100}


def test_openscene_checkpoint_roundtrip(tmp_path):
    spec = unet_spec("MinkUNet18A", in_channels=3, out_channels=8, **TINY)
    model = MinkUNet(spec)
    for p in model.parameters():
        p.data.normal_()
    ckpt = _me_state(model)
    assert "module.net3d.conv0p1s1.kernel" in ckpt["state_dict"]
    assert "module.net3d.bn0.bn.running_var" in ckpt["state_dict"]
    assert "module.net3d.block5.0.downsample.0.kernel" in ckpt["state_dict"]
    assert ckpt["state_dict"]["module.net3d.final.kernel"].shape == (4, 8)  # 1^3 kernels are 2-D in ME
    path = tmp_path / "openscene.pth.tar"
    torch.save(ckpt, path)
    state = convert_openscene_checkpoint(path)
    for k, v in model.state_dict().items():
        assert torch.equal(state[k], v), k
    loaded = load_openscene(path)
    assert loaded.spec == spec


def test_kernel_offset_permutation_single_offset():
    """A weight on ME offset (+1, 0, 0) (x = first axis, fastest) must read the x+1 neighbour."""
    K = 5
    me = torch.zeros(K ** 3, 1, 1)
    i, j, l = 3, 2, 2                      # per-axis indices of steps (+1, 0, 0)
    me[i + K * j + K * K * l] = 1.0        # MinkowskiEngine: first axis fastest
    ours = me_to_ours_kernel(me)
    k = int(np.flatnonzero(ours[:, 0, 0].numpy())[0])
    assert k == (i * K + j) * K + l
    assert kernel_steps(K)[k].tolist() == [1, 0, 0]
    # and behaviourally: output at the origin takes the value at x+1
    coords = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.int32)
    x = SparseTensor(torch.tensor([[0.0], [2.0], [3.0], [5.0]]), coords)
    y = sparse_conv(x, ours)
    assert y.feats[0, 0].item() == 2.0
    assert torch.equal(ours_to_me_kernel(ours), me)
