"""Synthetic anomalies: Perlin-noise masks and DRAEM-style texture blending.

DRAEM (Zavrtanik et al., ICCV 2021) trains on normal images only by pasting pseudo-anomalies:

1. a binary region ``M`` = thresholded, randomly rotated Perlin noise whose scale is
   ``2**U{min_scale..max_scale-1}`` per axis (``0..5`` by default, threshold 0.5);
2. a texture ``A`` (an image of the DTD texture set, or any image pool) changed by 3 of 10 random
   augmentations;
3. the blend ``I_a = I * (1 - M) + (1 - beta) * A * M + beta * I * M`` with ``beta ~ U[0, 0.8)``;
4. half of the samples are left clean (empty mask, label 0).

POUTA fills the region with ``I_aug`` instead (``self_mix``): a translated / rotated / identical copy
of the image merged with the texture. Pasted pixels are snapped to the 8-bit value grid of the
image, and :meth:`TextureSource.for_category` leaves out the category's own source photograph.

**All images here are float32 in [0, 1], never uint8 and never backbone-normalised.** A public
re-implementation blended a uint8 image with a float texture in [0, 1], which made every pasted
texture invisible (values ~1 added to values ~200); :func:`draem_anomaly` therefore refuses integer
images (``TypeError``) and float images outside [0, 1] (``ValueError``). Normalise *after* blending
if a backbone needs it; DRAEM/POUTA's reconstructive network wants [0, 1] input.
"""
from __future__ import annotations

from nbhelpers.data.anomalies.draem import (
    DraemDataset,
    augmented_image,
    check_float_image,
    draem_anomaly,
    on_value_grid,
    snap_to_grid,
    transformed_copy,
)
from nbhelpers.data.anomalies.perlin import RngLike, perlin_mask, perlin_noise
from nbhelpers.data.anomalies.prn import (
    EXTENDED_COLOR_AUGMENTATIONS,
    TARGET_SHAPES,
    extended_anomaly,
    foreground_mask,
    heterologous_anomaly,
    homologous_anomaly,
    random_affine,
    simulated_anomaly,
    target_area,
)
from nbhelpers.data.anomalies.textures import BUILTIN_TEXTURES, TEXTURE_AUGMENTATIONS, TextureSource, augment_texture
from nbhelpers.data.anomalies.prn_dataset import AnomalyGenerationDataset

__all__ = [
    "AnomalyGenerationDataset",
    "perlin_noise",
    "perlin_mask",
    "TextureSource",
    "BUILTIN_TEXTURES",
    "TEXTURE_AUGMENTATIONS",
    "augment_texture",
    "check_float_image",
    "draem_anomaly",
    "augmented_image",
    "transformed_copy",
    "on_value_grid",
    "snap_to_grid",
    "DraemDataset",
    "RngLike",
    "EXTENDED_COLOR_AUGMENTATIONS",
    "TARGET_SHAPES",
    "foreground_mask",
    "target_area",
    "random_affine",
    "extended_anomaly",
    "simulated_anomaly",
    "heterologous_anomaly",
    "homologous_anomaly",
]
