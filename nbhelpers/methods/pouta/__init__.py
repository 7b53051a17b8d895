"""POUTA: Produce Once, Utilize Twice for anomaly detection (Wang et al., 2023).

A DRAEM-style reconstructive network (encoder ``F_E1..F_E4``, mapping layer ``F_M``, decoder
``F_D4..F_D1``, image ``I_r``) is trained to repair synthetic anomalies. Instead of comparing the
input with the reconstructed *image* (the "vanilla" DRAEM-like design, Fig. 4a), POUTA's
coarse-to-fine discriminative network *reuses* the symmetric encoder/decoder representations:

* **FCM** (Feature Contrast Module): 1x1 convs on ``F_Ei`` and ``F_Di``, concatenation, 1x1 conv
  -> contrastive map ``F_Ci`` (the distribution shift between input and repaired features);
* **HSG** (High-level Semantic Guidance, Eq. 2-4): the deeper refined map, upsampled and passed
  through a 3x3 conv, yields a spatial weight ``W_sp`` (1x1 conv to one channel) and a channel
  weight ``W_cn`` (global average pool + 1x1 conv); ``F'_Ci = W_sp * F_Ci * W_cn``;
* **MSS** (Multi-scale Semantic Supervision, Eq. 5-6): a prediction head per level (1x1 conv,
  upsample, softmax) trained with focal + L1 against the synthetic mask (training only);
* **prediction** (Eq. 7-8): the channel-wise aggregation of ``F'_C1, F'_C2, F'_C3, F_C4`` predicts
  the pixel heatmap ``M_p``; the image score is the maximum of its 21x21 average pooling.

Training data are DRAEM pseudo-anomalies (:class:`nbhelpers.data.anomalies.DraemDataset`), images in
[0, 1] without ImageNet normalisation. Two registry names share this module: ``"pouta"`` and
``"pouta_vanilla"`` (same reconstructive network + a U-Net fed with ``[input, reconstruction]``).
The ablation switches of Table V are the config fields ``hsg`` and ``mss``.
"""
from __future__ import annotations

from nbhelpers.methods.pouta.analysis import complexity, count_flops, grad_cam
from nbhelpers.methods.pouta.config import LEVELS, Config, VanillaConfig
from nbhelpers.methods.pouta.discriminative import (
    Aggregation,
    CoarseToFineDiscriminator,
    FeatureContrast,
    POUTANet,
    PredictionHead,
    SemanticGuidance,
    UNet,
    VanillaDiscriminator,
)
from nbhelpers.methods.pouta.loss import (
    anomaly_probability,
    image_reconstruction_loss,
    image_score,
    mss_loss,
    segmentation_loss,
)
from nbhelpers.methods.pouta.method import POUTA, VanillaPOUTA
from nbhelpers.methods.pouta.reconstructive import Decoder, Encoder, MappingLayer, ReconstructiveNetwork, level_widths

__all__ = [
    "LEVELS",
    "Aggregation",
    "CoarseToFineDiscriminator",
    "Config",
    "Decoder",
    "Encoder",
    "FeatureContrast",
    "MappingLayer",
    "POUTA",
    "POUTANet",
    "PredictionHead",
    "ReconstructiveNetwork",
    "SemanticGuidance",
    "UNet",
    "VanillaConfig",
    "VanillaDiscriminator",
    "VanillaPOUTA",
    "anomaly_probability",
    "complexity",
    "count_flops",
    "grad_cam",
    "level_widths",
    "image_score",
    "mss_loss",
    "image_reconstruction_loss",
    "segmentation_loss",
]
