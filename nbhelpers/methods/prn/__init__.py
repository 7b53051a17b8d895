"""PRN: Prototypical Residual Networks for anomaly detection and localization.

Zhang, Wu, Wang, Chen, Jiang (CVPR 2023). A U-Net-like segmentation network whose encoder is a
frozen pre-trained CNN and whose skip connections carry, per scale ``j`` (three scales):

1. **Multi-scale prototypes** (MP, Sec. 3.1, Eq. 1): ``K = ratio x #normal images`` whole feature
   maps per scale, found by k-means (L2 distance) on the normal training maps and then frozen; an
   input's residual ``D_j = |F_j - P_j*|`` to its nearest prototype ``P_j*`` (each scale may pick
   another prototype);
2. **Multi-scale fusion** (MF, Sec. 3.2, Eq. 2): each scale receives the sum of every scale's map,
   resized by depth-wise separable strided convolutions (down) or bilinear + 1x1 convolution (up);
   applied to features and to residuals, which are then concatenated to ``2c_j`` channels;
3. **Multi-size self-attention** (MSA, Sec. 3.3, Eq. 3): heads attend between patches of sizes
   ``h, h/2, h/4, h/8``; their outputs are concatenated and passed through a residual block; the
   block is stacked ``N`` times (paper: 3) and followed by a second MF block;
4. a decoder upsamples the deepest backbone map through the three skips to a one-channel anomaly
   logit map at input size.

It is trained on normal images, *extended anomalies* made from a few seen real anomalies and
*simulated anomalies* (Sec. 3.4, see ``nbhelpers.data.anomalies``) with smooth-L1 + 5 x focal loss
(Eq. 5); the image score is the mean of the top-K pixels of the map (Sec. 3.5).
"""
from __future__ import annotations

from nbhelpers.clustering import KMeansResult, kmeans
from nbhelpers.data.anomalies.prn_dataset import KINDS, AnomalyGenerationDataset, load_image
from nbhelpers.methods.prn.attention import (
    MSASizeRule,
    MultiSizeSelfAttention,
    PatchAttentionHead,
    ResidualBlock,
    msa_patch_sizes,
    patchify,
    unpatchify,
    unsplittable_patches,
)
from nbhelpers.methods.prn.config import Config
from nbhelpers.methods.prn.fusion import BilinearUp, DepthwiseSeparableDown, MultiScaleFusion
from nbhelpers.methods.prn.loss import prn_loss, scaled_top_k, top_k_score
from nbhelpers.methods.prn.method import PRN
from nbhelpers.methods.prn.network import Decoder, PrototypicalResidualNetwork, UpBlock
from nbhelpers.methods.prn.prototypes import MultiScalePrototypes, nearest_prototype, windowed_nearest

__all__ = [
    "PRN",
    "Config",
    "KINDS",
    "AnomalyGenerationDataset",
    "BilinearUp",
    "Decoder",
    "DepthwiseSeparableDown",
    "KMeansResult",
    "MSASizeRule",
    "MultiScaleFusion",
    "MultiScalePrototypes",
    "MultiSizeSelfAttention",
    "PatchAttentionHead",
    "PrototypicalResidualNetwork",
    "ResidualBlock",
    "UpBlock",
    "kmeans",
    "load_image",
    "msa_patch_sizes",
    "nearest_prototype",
    "patchify",
    "prn_loss",
    "scaled_top_k",
    "top_k_score",
    "unpatchify",
    "unsplittable_patches",
    "windowed_nearest",
]
