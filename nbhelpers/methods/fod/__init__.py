"""FOD: Focus the Discrepancy — intra- and inter-correlation learning (Yao et al., ICCV 2023).

Per backbone level a small transformer reconstructs the (3x3 averaged) patch features ``X`` of a
frozen CNN. Its attention maps are the object of learning (**I2Correlation**):

* the **intra-correlation** ``S^g`` (Eq. 4) of every patch with every patch of the same image is
  pushed *away* from a local RBF prior and towards high entropy — normal patches learn to correlate
  broadly within their image;
* the **inter-correlation** ``S^e`` (Eq. 9) of every patch with the **reference features** ``X_f``
  (position-wise mean of the normal training features, §3.4) is pulled *towards* the RBF prior and
  low entropy — a normal patch correlates sharply with the reference at its own place;
* the **target correlations** ``T`` (Eq. 5) are RBF kernels over patch-grid distances with a
  learnable ``(sigma_y, sigma_x)`` per head and query position, each row normalised to sum 1;
* the I2Correlation output is ``Z_g - Z_e`` (§3.5).

Losses: reconstruction (Eq. 3) + intra (Eq. 8) + inter (Eq. 10) = Eq. 11, with the min-max routing
of the official code (as in Anomaly Transformer): one copy of the divergence trains the attention
with the target detached, the other trains ``sigma`` with the attention detached, with opposite
signs. Score (Eq. 12): reconstruction discrepancy times the inter-correlation discrepancy, levels
upsampled and averaged, Gaussian smoothing, image score = maximum.

Differences from the official repository (xcyao00/FOD), all deliberate:

* the output projection starts at the mean normal feature (see :meth:`FODTransformer.init_output`);
* the attention output projection is applied (the official code computes and discards it);
* reference features are embedded once and broadcast over the batch (the official code repeats them
  to the training batch size, which breaks the last, smaller batch);
* grid distances are computed from the feature-map shape (no ``distances/*.npy`` files tied to the
  working directory), so any input size works;
* Eq. 12's ``max(p) - p`` is taken per image, not over the batch (the same at the official test
  batch size of 1) — see :func:`discrepancy_weight`.

Where Eq. 1, 3 and 12 as printed differ from the official code, the code is followed: the residuals
of the two branches cancel (``Config.residual=True`` keeps Eq. 1's ``+ X``), the reconstruction term
is the per-patch MSE plus the cosine term, Eq. 12's weight is ``max(p) - p``, and ``L_rec`` is counted
in both of the official code's backward passes.
"""
from __future__ import annotations

from nbhelpers.methods.fod.config import EPS, REFERENCES, SCORINGS, Config
from nbhelpers.methods.fod.correlation import (
    grid_positions,
    rbf_target,
    routed_terms,
    row_entropy,
    sigma_from_logits,
    squared_axis_distances,
    symmetric_kl,
)
from nbhelpers.methods.fod.loss import (
    discrepancy_weight,
    feature_reconstruction_loss,
    inter_loss,
    intra_loss,
    patch_anomaly_score,
    reconstruction_discrepancy,
)
from nbhelpers.methods.fod.method import FOD
from nbhelpers.methods.fod.modules import (
    CorrelationAttention,
    FODLayer,
    FODTransformer,
    I2Correlation,
    PatchEmbedding,
    TargetCorrelation,
)

__all__ = [
    "EPS",
    "REFERENCES",
    "SCORINGS",
    "FOD",
    "Config",
    "CorrelationAttention",
    "FODLayer",
    "FODTransformer",
    "I2Correlation",
    "PatchEmbedding",
    "TargetCorrelation",
    "discrepancy_weight",
    "grid_positions",
    "inter_loss",
    "intra_loss",
    "rbf_target",
    "reconstruction_discrepancy",
    "feature_reconstruction_loss",
    "patch_anomaly_score",
    "routed_terms",
    "row_entropy",
    "sigma_from_logits",
    "squared_axis_distances",
    "symmetric_kl",
]
