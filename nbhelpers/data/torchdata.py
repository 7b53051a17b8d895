"""Torch datasets and loaders over :class:`~nbhelpers.data.records.Sample` records.

Every batch is a dict::

    {"image": float[B,3,H,W] (normalised with the given mean/std), "mask": float[B,1,H,W] in {0,1},
     "label": long[B], "path": list[str], "defect": list[str]}

Masks are the union of a sample's regions (MVTec LOCO: all its mask files). Per-region masks with
their sPRO saturation for AUsPRO come from :func:`load_regions`.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from nbhelpers.data.io import read_image, read_mask
from nbhelpers.data.records import Sample


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Resize ``uint8[H,W,3]`` to ``uint8[size,size,3]`` (bicubic, as the backbones were trained)."""
    if image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Resize ``bool[H,W]`` to ``bool[size,size]`` with nearest-neighbour sampling."""
    if mask.shape == (size, size):
        return mask
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.NEAREST)) > 127


def to_tensor(image: np.ndarray, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> torch.Tensor:
    """``uint8[H,W,3]`` -> ``float[3,H,W]`` in [0,1], then ``(x - mean) / std`` when both are given."""
    x = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1).float().div_(255.0)
    if mean is not None and std is not None:
        x = (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    return x


def union_mask(sample: Sample, size: int) -> np.ndarray:
    """``bool[size,size]``: union of the sample's regions (all False for normal samples)."""
    out = np.zeros((size, size), dtype=bool)
    for region in sample.regions:
        out |= resize_mask(read_mask(region.mask), size)
    return out


def load_regions(sample: Sample, size: int) -> list[tuple[np.ndarray, float]]:
    """Per-region masks at ``size`` with their sPRO saturation in pixels at that size.

    Returns ``[(bool[size,size], saturation_pixels), ...]``; empty for normal samples. A region too
    small to survive the resize keeps its centre pixel, so an anomalous image never turns "good". Absolute
    saturation thresholds are given at the native mask resolution and are scaled by the area ratio.
    """
    from nbhelpers.metrics import saturation_pixels

    out = []
    for region in sample.regions:
        native = read_mask(region.mask)
        mask = resize_mask(native, size)
        if not native.any():
            continue
        if not mask.any():  # a region smaller than one output pixel keeps the pixel at its centre
            ys, xs = np.nonzero(native)
            mask[int(ys.mean() * size / native.shape[0]), int(xs.mean() * size / native.shape[1])] = True
        scale = mask.size / native.size
        out.append((mask, saturation_pixels(region, mask, scale=scale)))
    return out


class AnomalyDataset(Dataset):
    """Images (+ union masks) of a list of samples, resized to ``size`` x ``size``.

    Args:
        samples: records from a reader.
        size: output side length in pixels.
        mean, std: input normalisation (the backbone's); ``None`` keeps images in [0,1].
    """

    def __init__(self, samples: Sequence[Sample], size: int, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        self.samples, self.size, self.mean, self.std = list(samples), int(size), mean, std

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        s = self.samples[index]
        image = resize_image(read_image(s.image), self.size)
        return {
            "image": to_tensor(image, self.mean, self.std),
            "mask": torch.from_numpy(union_mask(s, self.size)).float()[None],
            "label": torch.tensor(s.label, dtype=torch.long),
            "path": str(s.image),
            "defect": s.defect,
        }


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool = False, num_workers: int = 0,
                seed: int = 0, drop_last: bool = False) -> DataLoader:
    """A DataLoader whose shuffling is seeded (``loader.generator``; the training loop re-seeds it
    per epoch so that a resumed run sees the same order)."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      generator=generator, drop_last=drop_last, persistent_workers=False,
                      pin_memory=torch.cuda.is_available())
