"""THFR: Template-guided Hierarchical Feature Restoration (Guo et al., ICCV 2023).

A frozen pre-trained backbone gives multi-level features ``I_1..I_K`` of an image. THFR restores
*anomaly-free* versions of them and scores every pixel by the cosine distance between the original
and the restored features (Eq. 4-5):

1. **Bottlenecks** (§3.1) filter anomalous features out: the :class:`GlobalBottleneck` (ResBlock,
   global max pooling, 2x2 stride-2 deconvolutions) keeps only the image's global normal
   semantics; the :class:`LocalBottleneck` (RD4AD's one-class embedding) compresses all levels
   into a small map of local normal features.
2. **Template bank + image-level NNS** (§3.2, Eq. 1): the multi-level features of every normal
   training image form the :class:`TemplateBank`; the nearest training image (cosine similarity
   of the flattened deepest level, one matrix product for the whole batch) becomes the template.
   Training draws the template at random among the ``n`` nearest *other* training images.
3. **Template-guided compensation** (§3.2, Fig. 4): for each bottleneck branch a
   :class:`TemplateCompensation` module concatenates an input embedding ``E_i``, a template
   embedding ``E_t`` and the :class:`RelationRepresentation` (Eq. 2: bidirectional affinities
   between every input and template position), fuses them with 1x1 convolutions; ResBlocks and the
   :class:`RestorationDecoder` (a ResNet run in reverse) restore every level.
4. **Loss and maps** (Eq. 3-5): per-level ``1 - cos`` along channels; maps upsampled, summed,
   Gaussian-smoothed; image score = map maximum.

The :class:`FeatureVisualizer` (supplementary §1.1) is a decoder trained with MSE to turn
pre-trained features into images, used to *look at* restored features (Fig. 5).

There is no public code of THFR. Choices the paper leaves open (documented where they are made):
ResBlocks are torchvision's ResNet bottleneck blocks (as RD4AD's), the template's levels are
brought to the bottleneck grid by stride-2 convolutions (:class:`TemplateAlignment`), each restored level gets a final 1x1
projection (EfficientNet features are signed), and Adam uses RD4AD's betas (0.5, 0.999).
"""
from __future__ import annotations

from nbhelpers.methods.thfr.config import BY_LAYOUT, Config, by_layout
from nbhelpers.methods.thfr.loss import anomaly_map, restoration_loss
from nbhelpers.methods.thfr.method import THFR
from nbhelpers.methods.thfr.modules import (
    FeatureVisualizer,
    GlobalBottleneck,
    LocalBottleneck,
    RelationRepresentation,
    RestorationDecoder,
    TemplateCompensation,
    THFRNet,
    TemplateAlignment,
    relation_feature,
    res_block,
)
from nbhelpers.methods.thfr.template_bank import TemplateBank, draw_template, image_nns, template_agreement

__all__ = [
    "Config",
    "THFR",
    "THFRNet",
    "GlobalBottleneck",
    "LocalBottleneck",
    "RelationRepresentation",
    "TemplateCompensation",
    "RestorationDecoder",
    "FeatureVisualizer",
    "TemplateBank",
    "BY_LAYOUT",
    "by_layout",
    "image_nns",
    "template_agreement",
    "draw_template",
    "relation_feature",
    "TemplateAlignment",
    "restoration_loss",
    "anomaly_map",
    "res_block",
]
