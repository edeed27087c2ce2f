"""Sparse-convolution 3D U-Net distilled from fused 2D features (OpenScene-style).

sparse: SparseTensor and sparse conv/BN/pooling on kernel maps from the native extension.
model: MinkUNet (MinkUNet18A by default). train: distil(). predict: predict(), ensemble().
convert: OpenScene/MinkowskiEngine checkpoints -> our state dict.
"""
from .sparse import (CoordinateManager, SparseBatchNorm, SparseConv3d, SparseConvTranspose3d, SparsePool3d,
                     SparseReLU, SparseTensor, cat, kernel_steps, sparse_conv)

__all__ = ["CoordinateManager", "SparseBatchNorm", "SparseConv3d", "SparseConvTranspose3d", "SparsePool3d",
           "SparseReLU", "SparseTensor", "cat", "kernel_steps", "sparse_conv"]
