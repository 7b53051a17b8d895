"""Layers shared by the methods' networks: the convolution-norm-activation blocks.

One definition, so the methods cannot drift apart in how a block is built; each call site states
the paper's choices (kernel, stride, bias) explicitly.
"""
from __future__ import annotations

from torch import nn

__all__ = ["conv_bn_relu", "deconv_bn_relu"]


def conv_bn_relu(in_channels: int, out_channels: int, kernel: int = 1, stride: int = 1,
                 bias: bool = False) -> nn.Sequential:
    """``Conv(k, s) -> BatchNorm -> ReLU`` with 'same' padding (``k // 2``).

    ``float[B,C_in,H,W] -> float[B,C_out,H/s,W/s]``. ``bias``: whether the convolution has its own
    bias (redundant before BatchNorm; DRAEM's blocks keep it).
    """
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=bias),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


def deconv_bn_relu(in_channels: int, out_channels: int, factor: int = 2) -> nn.Sequential:
    """``ConvTranspose(k=f, s=f) -> BatchNorm -> ReLU``: exact ``f``-times upsampling.
    ``float[B,C_in,H,W] -> float[B,C_out,fH,fW]``."""
    return nn.Sequential(nn.ConvTranspose2d(in_channels, out_channels, factor, factor, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))
