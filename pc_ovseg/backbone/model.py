"""MinkUNet: the sparse 3D U-Net of MinkowskiEngine / OpenScene on our sparse backend.

Module names follow MinkowskiEngine's ``MinkUNetBase`` (conv0p1s1, bn0, block1.0.conv1, ...,
convtr7p2s2, final) so OpenScene checkpoints convert by renaming keys and reordering kernel
offsets (see pc_ovseg.backbone.convert).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from .sparse import SparseBatchNorm, SparseConv3d, SparseConvTranspose3d, SparseReLU, SparseTensor, cat


@dataclass(frozen=True)
class UNetSpec:
    """Architecture hyper-parameters; stored in checkpoints so a model rebuilds from its file."""

    in_channels: int = 3
    out_channels: int = 768
    planes: tuple[int, ...] = (32, 64, 128, 256, 128, 128, 96, 96)
    layers: tuple[int, ...] = (2, 2, 2, 2, 2, 2, 2, 2)
    init_dim: int = 32
    init_kernel: int = 5
    bn_momentum: float = 0.1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "UNetSpec":
        d = dict(d)
        d["planes"], d["layers"] = tuple(d["planes"]), tuple(d["layers"])
        return cls(**d)


#: name -> architecture (planes, layers) as in MinkowskiEngine's examples/minkunet.py
ARCHITECTURES: dict[str, dict] = {
    "MinkUNet14A": {"planes": (32, 64, 128, 256, 128, 128, 96, 96), "layers": (1,) * 8},
    "MinkUNet18A": {"planes": (32, 64, 128, 256, 128, 128, 96, 96), "layers": (2,) * 8},
    "MinkUNet18B": {"planes": (32, 64, 128, 256, 128, 128, 128, 128), "layers": (2,) * 8},
    "MinkUNet34C": {"planes": (32, 64, 128, 256, 256, 128, 96, 96), "layers": (2, 3, 4, 6, 2, 2, 2, 2)},
}


def unet_spec(arch: str = "MinkUNet18A", **overrides) -> UNetSpec:
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose from {sorted(ARCHITECTURES)}")
    return UNetSpec(**{**ARCHITECTURES[arch], **overrides})


class BasicBlock(nn.Module):
    """Two 3^3 submanifold convs with a residual (1^3 conv + BN when the width changes)."""

    def __init__(self, inplanes: int, planes: int, bn_momentum: float = 0.1):
        super().__init__()
        self.conv1 = SparseConv3d(inplanes, planes, 3)
        self.norm1 = SparseBatchNorm(planes, momentum=bn_momentum)
        self.conv2 = SparseConv3d(planes, planes, 3)
        self.norm2 = SparseBatchNorm(planes, momentum=bn_momentum)
        self.relu = SparseReLU(inplace=True)
        self.downsample = (nn.Sequential(SparseConv3d(inplanes, planes, 1), SparseBatchNorm(planes, momentum=bn_momentum))
                           if inplanes != planes else None)

    def forward(self, x: SparseTensor) -> SparseTensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        res = x if self.downsample is None else self.downsample(x)
        return self.relu(out.replace(out.feats + res.feats))


class MinkUNet(nn.Module):
    """Encoder (4 stride-2 levels) / decoder U-Net with skip concatenations; output at stride 1."""

    def __init__(self, spec: UNetSpec = UNetSpec()):
        super().__init__()
        self.spec = spec
        p, L, m = spec.planes, spec.layers, spec.bn_momentum
        self.inplanes = spec.init_dim
        self.conv0p1s1 = SparseConv3d(spec.in_channels, spec.init_dim, spec.init_kernel)
        self.bn0 = SparseBatchNorm(spec.init_dim, momentum=m)
        for level, name in enumerate(["conv1p1s2", "conv2p2s2", "conv3p4s2", "conv4p8s2"], start=1):
            setattr(self, name, SparseConv3d(self.inplanes, self.inplanes, 2, stride=2))
            setattr(self, f"bn{level}", SparseBatchNorm(self.inplanes, momentum=m))
            setattr(self, f"block{level}", self._layer(p[level - 1], L[level - 1]))
        skips = [p[2], p[1], p[0], spec.init_dim]
        for i, name in enumerate(["convtr4p16s2", "convtr5p8s2", "convtr6p4s2", "convtr7p2s2"]):
            setattr(self, name, SparseConvTranspose3d(self.inplanes, p[4 + i], 2, stride=2))
            setattr(self, f"bntr{4 + i}", SparseBatchNorm(p[4 + i], momentum=m))
            self.inplanes = p[4 + i] + skips[i]
            setattr(self, f"block{5 + i}", self._layer(p[4 + i], L[4 + i]))
        self.final = SparseConv3d(p[7], spec.out_channels, 1, bias=True)
        self.relu = SparseReLU(inplace=True)

    def _layer(self, planes: int, blocks: int) -> nn.Sequential:
        layers = []
        for _ in range(blocks):
            layers.append(BasicBlock(self.inplanes, planes, self.spec.bn_momentum))
            self.inplanes = planes
        return nn.Sequential(*layers)

    def forward(self, x: SparseTensor) -> SparseTensor:
        out_p1 = self.relu(self.bn0(self.conv0p1s1(x)))
        skips = [out_p1]
        out = out_p1
        for level, name in enumerate(["conv1p1s2", "conv2p2s2", "conv3p4s2", "conv4p8s2"], start=1):
            out = self.relu(getattr(self, f"bn{level}")(getattr(self, name)(out)))
            out = getattr(self, f"block{level}")(out)
            skips.append(out)
        skips.pop()  # the bottleneck itself
        for i, name in enumerate(["convtr4p16s2", "convtr5p8s2", "convtr6p4s2", "convtr7p2s2"]):
            out = self.relu(getattr(self, f"bntr{4 + i}")(getattr(self, name)(out)))
            out = getattr(self, f"block{5 + i}")(cat(out, skips.pop()))
        return self.final(out)
