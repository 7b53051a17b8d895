"""PRN's training batches (Sec. 3.4): groups of two normal, one extended and one simulated anomaly."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from nbhelpers.data.anomalies.prn import extended_anomaly, foreground_mask, heterologous_anomaly, homologous_anomaly
from nbhelpers.data.anomalies.textures import TextureSource
from nbhelpers.data.io import read_image
from nbhelpers.data.records import Sample
from nbhelpers.data.torchdata import resize_image
from nbhelpers.errors import DatasetError

#: Kinds of the images of a training group, in order: ``KINDS[kind]``.
KINDS = ("normal", "extended", "heterologous", "homologous")


class AnomalyGenerationDataset(Dataset):
    """PRN's online training data (Sec. 3.4, 4.1): groups of 2 normal images, 1 extended anomaly
    (EA, from a seen anomaly) and 1 simulated anomaly (HEA or HOA), i.e. the paper's 32 + 16 + 16 per
    batch of 64. Without seen anomalies the EA slot holds a second simulated anomaly.

    Args:
        normals: ``float32[H,W,3]`` normal images in [0, 1] at the training size.
        seen: ``(image float32[H,W,3], mask bool[H,W])`` seen anomalies at the same size (those with an
            empty mask, e.g. from datasets without pixel masks, are skipped).
        mean, std: backbone normalisation applied after generation.
        seed: group ``i`` of epoch ``e`` draws from ``default_rng([seed, e, i])``.
        textures: HEA texture pool. hoa_prob: chance that a simulated anomaly is homologous.
        target_areas: restrict anomalies to each normal image's foreground (:func:`foreground_mask`).

    Items: ``{"image": float[4,3,H,W] (normalised), "mask": float[4,1,H,W], "kind": long[4]}``
    (indices into :data:`KINDS`). Length: ``ceil(len(normals) / 2)`` groups, so an epoch shows every
    normal image once.
    """

    def __init__(self, normals: Sequence[np.ndarray], seen: Sequence[tuple[np.ndarray, np.ndarray]],
                 mean: Sequence[float] | None, std: Sequence[float] | None, seed: int = 0,
                 textures: TextureSource | None = None, hoa_prob: float = 0.5, target_areas: bool = True) -> None:
        if not normals:
            raise DatasetError("AnomalyGenerationDataset: no normal training images.")
        self.normals = [np.asarray(n, np.float32) for n in normals]
        self.seen = [(np.asarray(a, np.float32), np.asarray(m, bool)) for a, m in seen if np.any(m)]
        self.foregrounds = [foreground_mask(n) if target_areas else None for n in self.normals]
        self.mean = None if mean is None else np.asarray(mean, np.float32)
        self.std = None if std is None else np.asarray(std, np.float32)
        self.seed, self.epoch = int(seed), 0
        self.textures = textures or TextureSource()
        self.hoa_prob = float(hoa_prob)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return math.ceil(len(self.normals) / 2)

    def simulated(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
        """A HOA (probability ``hoa_prob``) or HEA on a random normal image: ``(image, mask, kind)``."""
        j = int(rng.integers(len(self.normals)))
        if rng.uniform() < self.hoa_prob:
            other = self.normals[int(rng.integers(len(self.normals)))]
            img, mask = homologous_anomaly(self.normals[j], other, rng, self.foregrounds[j])
            return img, mask, KINDS.index("homologous")
        img, mask = heterologous_anomaly(self.normals[j], rng, self.textures, self.foregrounds[j])
        return img, mask, KINDS.index("heterologous")

    def extended(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
        """An EA: a random seen anomaly pasted on a random normal image (or a simulated one if none)."""
        if not self.seen:
            return self.simulated(rng)
        j = int(rng.integers(len(self.normals)))
        anomaly, mask = self.seen[int(rng.integers(len(self.seen)))]
        img, m = extended_anomaly(self.normals[j], anomaly, mask, rng, self.foregrounds[j])
        return img, m, KINDS.index("extended")

    def _tensor(self, img: np.ndarray) -> torch.Tensor:
        if self.mean is not None and self.std is not None:
            img = (img - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        n = len(self.normals)
        h, w = self.normals[0].shape[:2]
        items = [(self.normals[(2 * index + t) % n], np.zeros((h, w), np.float32), 0) for t in range(2)]
        items += [self.extended(rng), self.simulated(rng)]
        return {"image": torch.stack([self._tensor(i) for i, _, _ in items]),
                "mask": torch.stack([torch.from_numpy(np.asarray(m, np.float32))[None] for _, m, _ in items]),
                "kind": torch.tensor([k for _, _, k in items], dtype=torch.long)}


def load_image(sample: Sample, size: int) -> np.ndarray:
    """A sample's image as ``float32[size,size,3]`` in [0, 1] (resized as the evaluation loader does)."""
    return resize_image(read_image(sample.image), size).astype(np.float32) / 255.0
