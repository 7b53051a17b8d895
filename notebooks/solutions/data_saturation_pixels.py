"""Notebook 00 · sPRO saturation of an MVTec LOCO region, in pixels of the evaluation mask."""
import numpy as np


def my_saturation_pixels(region, mask, scale):
    """Pixels of ``mask`` (``bool[H, W]``) a method must flag before ``region`` counts as fully found.

    ``region.saturation`` is ``None`` (plain PRO: the whole area), a fraction of the area
    (``region.relative``) or a pixel count at the native resolution, converted with the area ratio
    ``scale``; never more than the area.
    """
    area = float(np.count_nonzero(np.asarray(mask) > 0.5))
    if region.saturation is None:
        return area
    wanted = region.saturation * area if region.relative else region.saturation * scale
    return min(float(wanted), area)
