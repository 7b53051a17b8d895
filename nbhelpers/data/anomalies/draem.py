"""DRAEM's pseudo-anomalies: the blend of a texture into a Perlin mask, and the training dataset."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from torch.utils.data import Dataset as _TorchDataset

from nbhelpers.data.anomalies.perlin import RngLike, _hw, _rng, perlin_mask
from nbhelpers.data.anomalies.textures import TextureSource, _default_textures, augment_texture
from nbhelpers.data.io import read_image
from nbhelpers.errors import DatasetError


def check_float_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Ensure ``image`` is a float array with values in [0, 1]; return it as float32.

    Raises:
        TypeError: integer/bool images (e.g. uint8): convert with ``image.astype(np.float32) / 255``.
        ValueError: float images outside [0, 1] (e.g. 0..255 floats or backbone-normalised tensors).
    """
    arr = np.asarray(image)
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(
            f"{name} has dtype {arr.dtype}; synthetic anomalies need float images in [0, 1] "
            "(blending uint8 with a [0, 1] texture makes the texture invisible). "
            "Convert with image.astype(np.float32) / 255.")
    if arr.size and (float(arr.min()) < -1e-6 or float(arr.max()) > 1.0 + 1e-6):
        raise ValueError(
            f"{name} values span [{float(arr.min()):.3g}, {float(arr.max()):.3g}]; expected [0, 1]. "
            "Divide 0..255 images by 255 and blend before any backbone normalisation.")
    return arr.astype(np.float32, copy=False)


#: Number of steps of an 8-bit image's value grid: pixel values ``k / 255``.
GRID_LEVELS = 255


def on_value_grid(image: np.ndarray, levels: int = GRID_LEVELS) -> bool:
    """Whether every value of ``image`` (float in [0, 1]) is ``k / levels`` for an integer ``k``, as
    for any 8-bit image read from disk and divided by 255."""
    scaled = np.asarray(image, dtype=np.float64) * levels
    return bool(np.all(np.abs(scaled - np.round(scaled)) < 1e-3))


def snap_to_grid(values: np.ndarray, levels: int = GRID_LEVELS) -> np.ndarray:
    """Round float values in [0, 1] to the nearest ``k / levels`` (``float32``), so that pasted
    pixels cannot be told from normal ones by their off-grid values alone."""
    return (np.round(np.asarray(values, dtype=np.float32) * levels) / levels).astype(np.float32)


def transformed_copy(image: np.ndarray, rng: RngLike = None) -> np.ndarray:
    """POUTA's transformed version of the training image (Sec. III-A, after MemSeg): identity, a
    circular translation by a random offset, or a rotation by a multiple of 90 degrees (180 for a
    non-square image), each with probability 1/3. Exact pixel moves, no interpolation.
    ``float32[H, W, 3] -> float32[H, W, 3]``."""
    rng = _rng(rng)
    h, w = image.shape[:2]
    kind = int(rng.integers(3))
    if kind == 1:
        return np.roll(image, (int(rng.integers(h)), int(rng.integers(w))), axis=(0, 1))
    if kind == 2:
        return np.ascontiguousarray(np.rot90(image, int(rng.integers(1, 4)) if h == w else 2, axes=(0, 1)))
    return image.copy()


def augmented_image(image: np.ndarray, texture: np.ndarray, rng: RngLike = None,
                    weight_range: tuple[float, float] = (0.0, 0.5)) -> np.ndarray:
    """POUTA's ``I_aug``: a :func:`transformed_copy` of the image merged with an unrelated texture,
    ``I_aug = w * T(I) + (1 - w) * A`` with ``w ~ U[weight_range)`` (the paper does not give the
    merge; a convex blend keeps values in [0, 1]). Larger ``w`` gives anomalies made more of the
    category's own, displaced, appearance; ``w = 0`` is DRAEM's plain texture. ``w`` stays below
    0.5 so that the foreign texture always dominates: with ``w`` up to 1, an identity or
    background-on-background paste is invisible yet labelled anomalous, and the network learns to
    flag plain background (tuning tree, screw: pixel AUROC 0.18 after 480 steps with ``w ~ U[0, 1)``).
    ``float32[H, W, 3] x float32[H, W, 3] -> float32[H, W, 3]``."""
    rng = _rng(rng)
    weight = np.float32(rng.uniform(*weight_range))
    return (weight * transformed_copy(image, rng) + (1 - weight) * texture).astype(np.float32)


def draem_anomaly(image: np.ndarray, rng: RngLike = None, textures: TextureSource | None = None,
                  anomaly_prob: float = 0.5, beta_range: tuple[float, float] = (0.0, 0.8),
                  min_scale: int = 0, max_scale: int = 6, threshold: float = 0.5,
                  n_augment: int = 3, self_mix: bool = False) -> tuple[np.ndarray, np.ndarray, int]:
    """Paste a DRAEM pseudo-anomaly into ``image`` (``float32[H, W, 3]`` in [0, 1]).

    With probability ``1 - anomaly_prob`` the image comes back unchanged with an empty mask and label
    0. Otherwise a Perlin region ``M`` (:func:`perlin_mask`) is filled with an augmented texture
    ``A`` (:meth:`TextureSource.sample`, :func:`augment_texture`) -- or, with ``self_mix``, with
    POUTA's ``I_aug`` (:func:`augmented_image` of the image and ``A``) -- ``beta ~ U[beta_range)``::

        aug = image * (1 - M) + (1 - beta) * A * M + beta * image * M

    Pixels outside ``M`` are returned bit-for-bit unchanged. When ``image`` lies on the 8-bit value
    grid (:func:`on_value_grid`), the pasted pixels are snapped to it too.

    Returns:
        ``(augmented float32[H, W, 3] in [0, 1], mask float32[H, W] in {0, 1}, label)`` where label is
        1 exactly when the mask is non-empty.

    Raises:
        TypeError / ValueError: see :func:`check_float_image` (uint8 input is refused on purpose).
    """
    img = check_float_image(image)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"image must be [H, W, 3], got shape {img.shape}.")
    rng = _rng(rng)
    h, w = img.shape[:2]
    if rng.uniform() >= anomaly_prob:
        return img.copy(), np.zeros((h, w), np.float32), 0
    textures = textures if textures is not None else _default_textures()
    tex = textures.sample(rng, (h, w))
    if n_augment:
        tex = augment_texture(tex, rng, n=n_augment)
    if self_mix:
        tex = augmented_image(img, tex, rng)
    mask = perlin_mask((h, w), rng, min_scale=min_scale, max_scale=max_scale, threshold=threshold)
    beta = np.float32(rng.uniform(*beta_range))
    blended = np.clip((1.0 - beta) * tex + beta * img, 0.0, 1.0).astype(np.float32)
    if on_value_grid(img):
        blended = snap_to_grid(blended)
    aug = np.where(mask[..., None], blended, img).astype(np.float32)
    label = int(mask.any())
    return aug, mask.astype(np.float32), label


def _load_resized(item, size: tuple[int, int]) -> np.ndarray:
    """A path or an array (uint8 HWC, or float HWC in [0, 1]) -> float32[H, W, 3] in [0, 1] at ``size``."""
    if isinstance(item, (str, Path)):
        arr = read_image(Path(item))
    else:
        arr = np.asarray(item)
        if hasattr(item, "detach"):  # a torch tensor [3, H, W]
            arr = item.detach().cpu().numpy()
            if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
                arr = arr.transpose(1, 2, 0)
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.shape[-1] == 1:
            arr = np.repeat(arr, 3, axis=-1)
        arr = arr[..., :3]
        if np.issubdtype(arr.dtype, np.floating):
            arr = np.clip(check_float_image(arr) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        elif arr.dtype != np.uint8:
            raise TypeError(f"images must be uint8 or float in [0, 1], got {arr.dtype}.")
    h, w = size
    pil = Image.fromarray(np.ascontiguousarray(arr))
    if pil.size != (w, h):
        pil = pil.resize((w, h), Image.BILINEAR)
    return np.asarray(pil, dtype=np.float32) / 255.0


class DraemDataset(_TorchDataset):
    """Normal images -> DRAEM training pairs, deterministic per ``(seed, epoch, index)``.

    Args:
        images: image paths, or arrays (uint8 HWC / float HWC in [0, 1]).
        size: output size (int or ``(H, W)``).
        textures: texture pool (default: the offline built-in one).
        seed: base seed; item ``i`` of epoch ``e`` uses ``np.random.default_rng([seed, e, i])``, so
            it does not depend on worker count or access order.
        anomaly_prob: fraction of items that get an anomaly (DRAEM: 0.5).
        beta_range, min_scale, max_scale, threshold, n_augment: see :func:`draem_anomaly`.
        rotate_prob: probability of rotating the clean image by ``U(-90, 90)`` degrees first (DRAEM
            does this with 0.3 on MVTec AD; the result is snapped back to the 8-bit grid); 0 keeps
            the image as is.
        self_mix: fill the region with POUTA's ``I_aug`` instead of the texture (:func:`draem_anomaly`).

    Items are dicts ``{"image": float[3, H, W] (clean), "augmented": float[3, H, W],
    "mask": float[1, H, W], "label": long[]}``, all in [0, 1] and *not* ImageNet-normalised.
    Call :meth:`set_epoch` each epoch so that every epoch draws new anomalies.
    """

    def __init__(self, images: Sequence[Path] | Sequence[np.ndarray], size: int | tuple[int, int] = 256,
                 textures: TextureSource | None = None, seed: int = 0, anomaly_prob: float = 0.5,
                 beta_range: tuple[float, float] = (0.0, 0.8), min_scale: int = 0, max_scale: int = 6,
                 threshold: float = 0.5, n_augment: int = 3, rotate_prob: float = 0.0, self_mix: bool = False):
        if len(images) == 0:
            raise DatasetError("DraemDataset: no images given (need the normal training images).")
        self.images = list(images)
        self.size = _hw(size)
        self.textures = textures if textures is not None else _default_textures()
        self.seed = int(seed)
        self.epoch = 0
        self.anomaly_prob = float(anomaly_prob)
        self.beta_range = tuple(beta_range)
        self.min_scale, self.max_scale, self.threshold = int(min_scale), int(max_scale), float(threshold)
        self.n_augment = int(n_augment)
        self.rotate_prob = float(rotate_prob)
        self.self_mix = bool(self_mix)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch, so that the same index draws a new anomaly in each epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        import torch

        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index = index % len(self)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        img = _load_resized(self.images[index], self.size)
        if self.rotate_prob > 0 and rng.uniform() < self.rotate_prob:
            img = snap_to_grid(np.clip(ndimage.rotate(img, float(rng.uniform(-90, 90)), axes=(0, 1), reshape=False,
                                                      order=1, mode="constant", cval=0.0), 0, 1))
        aug, mask, label = draem_anomaly(
            img, rng, self.textures, anomaly_prob=self.anomaly_prob, beta_range=self.beta_range,
            min_scale=self.min_scale, max_scale=self.max_scale, threshold=self.threshold,
            n_augment=self.n_augment, self_mix=self.self_mix)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))),
            "augmented": torch.from_numpy(np.ascontiguousarray(aug.transpose(2, 0, 1))),
            "mask": torch.from_numpy(mask[None].copy()),
            "label": torch.tensor(label, dtype=torch.long),
        }
