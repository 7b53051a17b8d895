"""SynthAD: a deterministic, offline anomaly-detection benchmark written in the real on-disk layouts.

Nine categories, generated from a seed with NumPy, SciPy and the photographs that scikit-image
ships (no download):

* **textures** (MVTec AD layout): ``brick``, ``grass``, ``gravel`` -- random crops of
  ``skimage.data.brick()/grass()/gravel()`` with rotation, scale, brightness and contrast jitter,
  tinted to colour. Defects: scratch, hole, contamination, crack.
* **objects** (MVTec AD layout): ``washer`` (metal ring), ``screw`` (threaded bolt), ``capsule``
  (two-tone pill) -- shaded height-field renderings with varying pose, lighting and slight shape
  jitter, on a background with a drop shadow. Defects: scratch, crack, hole, contamination,
  deformation (locally warped outline).
* **logical** (MVTec LOCO AD layout), each breaking a rule with parts that look normal:
  ``nuts`` (counting: exactly three of a tray's six compartments hold a nut, which ones varies;
  missing / extra nut), ``kit`` (placement: ring, bolt, cap and nut go round four slots clockwise
  in that order from any slot; swapped parts / a part duplicated), ``cables`` (pairing: the top and
  the bottom cable share a colour and a gauge drawn per image; mismatched colour / gauge); plus a
  structural ``contamination`` each. One mask file per defect region, filled with the defect's
  ``pixel_value``; saturation thresholds in ``defects_config.json``.

  The design rule of the logical categories: *every logical anomaly is made only of local
  appearances that occur in normal training images* (an empty compartment, a part in a slot, a
  cable of a colour), and the related parts lie far apart, so patch matching cannot see it while a
  comparison of whole images can (``tests/test_synth.py`` checks the first half at smoke scale;
  notebook 01 measures both halves with the baseline and :mod:`nbhelpers.image_level`).

:data:`VERSION` changes whenever a category's content changes; readers refuse a category of
another version (:func:`check_version`) and bench rows and checkpoints carry it in their key
(:func:`dataset_tag`), so results of an old tree are never mixed with new ones.

Trees written by :func:`generate` (``<out>/synthad.json`` describes them)::

    <out>/<texture|object>/train/good/000.png
    <out>/<texture|object>/test/{good,<defect>}/000.png
    <out>/<texture|object>/ground_truth/<defect>/000_mask.png              (0/255)
    <out>/<logical>/defects_config.json
    <out>/<logical>/{train,validation}/good/000.png
    <out>/<logical>/test/{good,logical_anomalies,structural_anomalies}/000.png
    <out>/<logical>/ground_truth/<logical|structural>_anomalies/000/000.png, 001.png ...

Every sample is drawn from ``numpy.random.default_rng([seed, crc32(category), part, index, 0])``
(its normal content) and ``[..., 1, attempt]`` (its defect), so a seed gives byte-identical files,
and :func:`render_sample` with ``clean=True`` renders an anomalous sample without its defect.

Example:
    >>> from nbhelpers.data.synth import generate, load_manifest
    >>> root = generate("data/synthad", preset="smoke", categories=["grass", "nuts"])  # doctest: +SKIP
    >>> load_manifest(root)["categories"]["nuts"]["layout"]                           # doctest: +SKIP
    'mvtec_loco'
"""
from __future__ import annotations

from nbhelpers.data.synth.categories import CATEGORIES, PlannedFile, category_plan, render_sample
from nbhelpers.data.synth.spec import CategorySpec, DefectType, KINDS, LOGICAL, MANIFEST, STRUCTURAL, SYNTH_PRESETS, VERSION
from nbhelpers.data.synth.writer import check_version, dataset_tag, ensure, generate, load_manifest, plan

__all__ = [
    "CATEGORIES",
    "KINDS",
    "MANIFEST",
    "SYNTH_PRESETS",
    "CategorySpec",
    "DefectType",
    "PlannedFile",
    "category_plan",
    "check_version",
    "dataset_tag",
    "ensure",
    "generate",
    "load_manifest",
    "plan",
    "render_sample",
    "VERSION",
    "LOGICAL",
    "STRUCTURAL",
]
