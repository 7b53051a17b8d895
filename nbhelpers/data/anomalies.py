"""Synthetic anomalies: Perlin-noise masks and DRAEM-style texture blending.

DRAEM (Zavrtanik et al., ICCV 2021) trains on normal images only by pasting pseudo-anomalies:

1. a binary region ``M`` = thresholded, randomly rotated Perlin noise whose scale is
   ``2**U{min_scale..max_scale-1}`` per axis (``0..5`` by default, threshold 0.5);
2. a texture ``A`` (an image of the DTD texture set, or any image pool) changed by 3 of 10 random
   augmentations;
3. the blend ``I_a = I * (1 - M) + (1 - beta) * A * M + beta * I * M`` with ``beta ~ U[0, 0.8)``;
4. half of the samples are left clean (empty mask, label 0).

**All images here are float32 in [0, 1], never uint8 and never backbone-normalised.** A public
re-implementation blended a uint8 image with a float texture in [0, 1], which made every pasted
texture invisible (values ~1 added to values ~200); :func:`draem_anomaly` therefore refuses integer
images (``TypeError``) and float images outside [0, 1] (``ValueError``). Normalise *after* blending
if a backbone needs it; DRAEM/POUTA's reconstructive network wants [0, 1] input.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps
from scipy import ndimage

from nbhelpers.data.io import is_image_file, read_image
from nbhelpers.errors import DatasetError

__all__ = [
    "perlin_noise",
    "perlin_mask",
    "TextureSource",
    "BUILTIN_TEXTURES",
    "TEXTURE_AUGMENTATIONS",
    "augment_texture",
    "check_float_image",
    "draem_anomaly",
    "DraemDataset",
]

RngLike = np.random.Generator | int | None


def _rng(rng: RngLike) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _hw(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


# ------------------------------------------------------------------------------------------ Perlin


def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def perlin_noise(shape: tuple[int, int], res: tuple[int, int], rng: RngLike = None) -> np.ndarray:
    """2-D gradient (Perlin) noise of any size, ``float32[H, W]`` in about [-1, 1].

    ``res`` is the number of lattice cells along each axis (the noise "frequency"). Sizes need not
    be multiples of ``res``: pixel ``i`` sits at lattice coordinate ``i * res / H`` and is
    interpolated between the random unit gradients of its cell's four corners with the quintic fade
    ``6t^5 - 15t^4 + 10t^3`` (fully vectorised). Values are scaled by ``sqrt(2)`` as in DRAEM, so the
    theoretical range is [-1, 1].
    """
    h, w = _hw(shape)
    ry, rx = _hw(res)
    if h < 1 or w < 1 or ry < 1 or rx < 1:
        raise ValueError(f"perlin_noise: shape {shape} and res {res} must be positive.")
    rng = _rng(rng)
    angles = rng.uniform(0.0, 2.0 * np.pi, size=(ry + 1, rx + 1))
    grads = np.stack([np.cos(angles), np.sin(angles)], axis=-1)  # [ry+1, rx+1, 2]

    y = np.arange(h, dtype=np.float64) * (ry / h)
    x = np.arange(w, dtype=np.float64) * (rx / w)
    iy = np.minimum(np.floor(y).astype(np.int64), ry - 1)
    ix = np.minimum(np.floor(x).astype(np.int64), rx - 1)
    fy = (y - iy)[:, None]  # [H, 1]
    fx = (x - ix)[None, :]  # [1, W]
    IY, IX = iy[:, None], ix[None, :]

    def corner(dy: int, dx: int) -> np.ndarray:
        g = grads[IY + dy, IX + dx]  # [H, W, 2]
        return g[..., 0] * (fy - dy) + g[..., 1] * (fx - dx)

    n00, n01, n10, n11 = corner(0, 0), corner(0, 1), corner(1, 0), corner(1, 1)
    ty, tx = _fade(fy), _fade(fx)
    top = n00 + tx * (n01 - n00)
    bottom = n10 + tx * (n11 - n10)
    noise = math.sqrt(2.0) * (top + ty * (bottom - top))
    return noise.astype(np.float32)


def perlin_mask(shape: tuple[int, int], rng: RngLike = None, min_scale: int = 0, max_scale: int = 6,
                threshold: float = 0.5, rotate: bool = True, max_tries: int = 10) -> np.ndarray:
    """DRAEM's anomaly region: thresholded, randomly rotated Perlin noise, ``bool[H, W]``, never empty.

    Per axis the lattice resolution is ``2**k`` with ``k ~ U{min_scale, ..., max_scale - 1}``; the
    noise is rotated by ``U(-90, 90)`` degrees (bilinear, zero outside, like DRAEM's imgaug Affine)
    and thresholded at ``threshold``. An empty result is redrawn up to ``max_tries`` times; after
    that the top 5 % of the last noise draw is used, so the mask is never empty.
    """
    h, w = _hw(shape)
    if not 0 <= min_scale < max_scale:
        raise ValueError(f"perlin_mask: need 0 <= min_scale < max_scale, got {min_scale}, {max_scale}.")
    rng = _rng(rng)
    noise = None
    for _ in range(max(1, max_tries)):
        ky, kx = rng.integers(min_scale, max_scale, size=2)
        noise = perlin_noise((h, w), (2 ** int(ky), 2 ** int(kx)), rng)
        if rotate:
            angle = float(rng.uniform(-90.0, 90.0))
            noise = ndimage.rotate(noise, angle, reshape=False, order=1, mode="constant", cval=0.0)
        mask = noise > threshold
        if mask.any():
            return mask
    return noise >= np.quantile(noise, 0.95)


# ---------------------------------------------------------------------------------------- textures

#: Real photographs shipped inside scikit-image (no download), used when no texture folder is given.
BUILTIN_TEXTURES = ("brick", "grass", "gravel", "coffee", "chelsea", "astronaut", "rocket",
                    "immunohistochemistry", "hubble_deep_field", "moon", "coins")


@functools.lru_cache(maxsize=None)
def _builtin_texture(name: str) -> np.ndarray:
    import skimage.data

    img = np.asarray(getattr(skimage.data, name)())
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    img = img[..., :3]
    if img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    img.setflags(write=False)
    return img


class TextureSource:
    """A pool of texture images to paste as anomalies.

    Args:
        root: a folder searched recursively for images (e.g. DTD's ``dtd/images``), or ``None`` for
            the photographs scikit-image ships (:data:`BUILTIN_TEXTURES`, fully offline).
        names: with ``root=None``, which built-in images to use.
        min_crop: smallest random crop, as a fraction of the texture's shorter side.

    Raises:
        DatasetError: ``root`` does not exist or holds no image file.
    """

    def __init__(self, root: str | Path | None = None, names: Sequence[str] | None = None,
                 min_crop: float = 0.5):
        self.root = None if root is None else Path(root)
        self.min_crop = float(min_crop)
        if self.root is None:
            self.names = tuple(names or BUILTIN_TEXTURES)
            self.paths: list[Path] = []
        else:
            if not self.root.is_dir():
                raise DatasetError(f"{self.root}: texture folder does not exist. Pass a folder of "
                                   "texture images (e.g. dtd/images) or root=None for the built-in ones.")
            self.paths = sorted(p for p in self.root.rglob("*") if is_image_file(p))
            if not self.paths:
                raise DatasetError(f"{self.root}: texture folder holds no image file "
                                   "(.png/.jpg/...). Expected e.g. dtd/images/<class>/*.jpg.")
            self.names = tuple(str(p) for p in self.paths)

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        where = "skimage.data" if self.root is None else str(self.root)
        return f"TextureSource({where!r}, {len(self)} images)"

    def load(self, i: int) -> np.ndarray:
        """Texture ``i`` as ``uint8[H, W, 3]``."""
        if self.root is None:
            return _builtin_texture(self.names[i])
        return read_image(self.paths[i])

    def sample(self, rng: RngLike, size: int | tuple[int, int]) -> np.ndarray:
        """A random texture, randomly cropped and resized to ``size``: ``float32[H, W, 3]`` in [0, 1]."""
        rng = _rng(rng)
        h, w = _hw(size)
        tex = self.load(int(rng.integers(len(self))))
        th, tw = tex.shape[:2]
        side = min(th, tw)
        crop = max(1, int(round(side * rng.uniform(self.min_crop, 1.0))))
        # keep the target aspect ratio inside the crop
        ch = max(1, min(th, int(round(crop * min(1.0, h / w)))))
        cw = max(1, min(tw, int(round(crop * min(1.0, w / h)))))
        y0 = int(rng.integers(0, th - ch + 1))
        x0 = int(rng.integers(0, tw - cw + 1))
        patch = Image.fromarray(np.ascontiguousarray(tex[y0:y0 + ch, x0:x0 + cw]))
        patch = patch.resize((w, h), Image.BILINEAR)
        return np.asarray(patch, dtype=np.float32) / 255.0


@functools.lru_cache(maxsize=1)
def _default_textures() -> TextureSource:
    return TextureSource()


# ----------------------------------------------------------------------------- texture augmentations


def _to_pil(x: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8))


def _from_pil(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float32) / 255.0


def _aug_gamma(x, rng):  # iaa.GammaContrast((0.5, 2.0), per_channel=True)
    return np.power(x, rng.uniform(0.5, 2.0, size=3).astype(np.float32))


def _aug_brightness(x, rng):  # iaa.MultiplyAndAddToBrightness(mul=(0.8, 1.2), add=(-30, 30))
    return x * rng.uniform(0.8, 1.2) + rng.uniform(-30, 30) / 255.0


def _aug_sharpness(x, rng):  # iaa.pillike.EnhanceSharpness(factor=(0, 2))
    return _from_pil(ImageEnhance.Sharpness(_to_pil(x)).enhance(float(rng.uniform(0.0, 2.0))))


def _aug_hue_saturation(x, rng):  # iaa.AddToHueAndSaturation((-50, 50), per_channel=True)
    from skimage.color import hsv2rgb, rgb2hsv

    hsv = rgb2hsv(np.clip(x, 0, 1))
    dh, ds = rng.uniform(-50, 50, size=2) / 255.0
    hsv[..., 0] = (hsv[..., 0] + dh) % 1.0
    hsv[..., 1] = np.clip(hsv[..., 1] + ds, 0, 1)
    return hsv2rgb(hsv)


def _aug_solarize(x, rng):  # iaa.Solarize(threshold=(32, 128))
    t = rng.uniform(32, 128) / 255.0
    return np.where(x >= t, 1.0 - x, x)


def _aug_posterize(x, rng):  # iaa.Posterize(nb_bits=(1, 8))
    return _from_pil(ImageOps.posterize(_to_pil(x), int(rng.integers(1, 8))))


def _aug_invert(x, rng):  # iaa.Invert()
    return 1.0 - x


def _aug_autocontrast(x, rng):  # iaa.pillike.Autocontrast()
    return _from_pil(ImageOps.autocontrast(_to_pil(x), cutoff=float(rng.uniform(0, 10))))


def _aug_equalize(x, rng):  # iaa.pillike.Equalize()
    return _from_pil(ImageOps.equalize(_to_pil(x)))


def _aug_rotate(x, rng):  # iaa.Affine(rotate=(-45, 45))
    return ndimage.rotate(x, float(rng.uniform(-45, 45)), axes=(0, 1), reshape=False, order=1, mode="reflect")


#: DRAEM's ten texture augmentations (name -> ``f(float HWC in [0,1], rng) -> float HWC``).
TEXTURE_AUGMENTATIONS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "gamma": _aug_gamma,
    "brightness": _aug_brightness,
    "sharpness": _aug_sharpness,
    "hue_saturation": _aug_hue_saturation,
    "solarize": _aug_solarize,
    "posterize": _aug_posterize,
    "invert": _aug_invert,
    "autocontrast": _aug_autocontrast,
    "equalize": _aug_equalize,
    "rotate": _aug_rotate,
}


def augment_texture(tex: np.ndarray, rng: RngLike = None, n: int = 3,
                    names: Sequence[str] | None = None) -> np.ndarray:
    """Apply ``n`` distinct augmentations drawn at random from :data:`TEXTURE_AUGMENTATIONS`.

    ``names`` forces a specific sequence instead. Input and output are ``float32[H, W, 3]`` in [0, 1].
    """
    rng = _rng(rng)
    x = np.asarray(tex, dtype=np.float32)
    if names is None:
        keys = list(TEXTURE_AUGMENTATIONS)
        names = [keys[i] for i in rng.choice(len(keys), size=min(n, len(keys)), replace=False)]
    for name in names:
        x = np.clip(np.asarray(TEXTURE_AUGMENTATIONS[name](x, rng), dtype=np.float32), 0.0, 1.0)
    return x


# ------------------------------------------------------------------------------------------- DRAEM


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


def draem_anomaly(image: np.ndarray, rng: RngLike = None, textures: TextureSource | None = None,
                  anomaly_prob: float = 0.5, beta_range: tuple[float, float] = (0.0, 0.8),
                  min_scale: int = 0, max_scale: int = 6, threshold: float = 0.5,
                  n_augment: int = 3) -> tuple[np.ndarray, np.ndarray, int]:
    """Paste a DRAEM pseudo-anomaly into ``image`` (``float32[H, W, 3]`` in [0, 1]).

    With probability ``1 - anomaly_prob`` the image comes back unchanged with an empty mask and label
    0. Otherwise a Perlin region ``M`` (:func:`perlin_mask`) is filled with an augmented texture
    ``A`` (:meth:`TextureSource.sample`, :func:`augment_texture`), ``beta ~ U[beta_range)``::

        aug = image * (1 - M) + (1 - beta) * A * M + beta * image * M

    Pixels outside ``M`` are returned bit-for-bit unchanged.

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
    mask = perlin_mask((h, w), rng, min_scale=min_scale, max_scale=max_scale, threshold=threshold)
    beta = np.float32(rng.uniform(*beta_range))
    blended = np.clip((1.0 - beta) * tex + beta * img, 0.0, 1.0).astype(np.float32)
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


try:  # torch is a hard dependency of the package; the guard keeps this module importable without it
    from torch.utils.data import Dataset as _TorchDataset
except ImportError:  # pragma: no cover
    _TorchDataset = object


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
            does this with 0.3 on MVTec AD); 0 keeps the image as is.

    Items are dicts ``{"image": float[3, H, W] (clean), "augmented": float[3, H, W],
    "mask": float[1, H, W], "label": long[]}``, all in [0, 1] and *not* ImageNet-normalised.
    Call :meth:`set_epoch` each epoch so that every epoch draws new anomalies.
    """

    def __init__(self, images: Sequence[Path] | Sequence[np.ndarray], size: int | tuple[int, int] = 256,
                 textures: TextureSource | None = None, seed: int = 0, anomaly_prob: float = 0.5,
                 beta_range: tuple[float, float] = (0.0, 0.8), min_scale: int = 0, max_scale: int = 6,
                 threshold: float = 0.5, n_augment: int = 3, rotate_prob: float = 0.0):
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
            img = np.clip(ndimage.rotate(img, float(rng.uniform(-90, 90)), axes=(0, 1), reshape=False,
                                         order=1, mode="constant", cval=0.0), 0, 1).astype(np.float32)
        aug, mask, label = draem_anomaly(
            img, rng, self.textures, anomaly_prob=self.anomaly_prob, beta_range=self.beta_range,
            min_scale=self.min_scale, max_scale=self.max_scale, threshold=self.threshold,
            n_augment=self.n_augment)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))),
            "augmented": torch.from_numpy(np.ascontiguousarray(aug.transpose(2, 0, 1))),
            "mask": torch.from_numpy(mask[None].copy()),
            "label": torch.tensor(label, dtype=torch.long),
        }


# ------------------------------------------------------------------ PRN: extended + simulated anomalies
# Zhang et al., "Prototypical Residual Networks for Anomaly Detection and Localization" (CVPR 2023),
# Sec. 3.4: a few *seen* anomalies are multiplied into many "extended anomalies" (EA, Eq. 4), and
# normal images get "simulated anomalies" (heterologous HEA: Perlin x texture, as DRAEM; homologous
# HOA: Perlin x an augmented normal image). Both are placed inside a "target area" (TA): part of the
# object's foreground for objects, anywhere for textures. All images: float32 [H, W, 3] in [0, 1].

#: PRN's Aug1 colour operations (two are drawn per extended anomaly), keys of TEXTURE_AUGMENTATIONS.
EXTENDED_COLOR_AUGMENTATIONS = ("equalize", "solarize", "posterize", "sharpness", "autocontrast", "invert", "gamma")
#: Geometries of PRN's target areas.
TARGET_SHAPES = ("circle", "rectangle", "polygon")


def foreground_mask(image: np.ndarray, border: int = 4, max_border_std: float = 0.08,
                    min_fraction: float = 0.01, max_fraction: float = 0.95) -> np.ndarray:
    """Where an anomaly may be placed: the object for object images, everything for textures.

    The background is modelled by a quadratic surface per colour channel, fitted (least squares) to
    the ``border``-pixel frame of the image, so that vignetting and lighting gradients stay
    background. A frame that the surface does not explain (residual std ``> max_border_std``) means
    a texture: all pixels are foreground. Otherwise the foreground is every pixel farther from the
    surface than twice the 99th percentile of the frame's distances (at least 0.05), cleaned by a
    binary opening. A result covering less than ``min_fraction`` or more than ``max_fraction`` of
    the image also gives an all-True mask.

    Args:
        image: ``float32[H, W, 3]`` in [0, 1].

    Returns:
        ``bool[H, W]``.
    """
    img = check_float_image(image)
    h, w = img.shape[:2]
    b = max(1, min(int(border), h // 4, w // 4))
    frame = np.zeros((h, w), dtype=bool)
    frame[:b] = frame[-b:] = True
    frame[:, :b] = frame[:, -b:] = True
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    basis = np.stack([np.ones_like(yy), yy, xx, yy * yy, xx * xx, yy * xx], axis=-1)
    coef, *_ = np.linalg.lstsq(basis[frame], img[frame], rcond=None)
    dist = np.linalg.norm(img - basis @ coef, axis=-1)
    everything = np.ones((h, w), dtype=bool)
    if float((img[frame] - basis[frame] @ coef).std(axis=0).max()) > max_border_std:
        return everything
    fg = ndimage.binary_opening(dist > max(2.0 * float(np.quantile(dist[frame], 0.99)), 0.05), iterations=2)
    if not min_fraction <= float(fg.mean()) <= max_fraction:
        return everything
    return fg


def target_area(shape: tuple[int, int], rng: RngLike = None, foreground: np.ndarray | None = None,
                size_range: tuple[float, float] = (0.15, 0.5), shapes: Sequence[str] = TARGET_SHAPES) -> np.ndarray:
    """A PRN target area: a random circle, rectangle or polygon centred on a random foreground pixel,
    intersected with the foreground.

    Args:
        shape: ``(H, W)``.
        foreground: ``bool[H, W]`` (see :func:`foreground_mask`); ``None`` = the whole image.
        size_range: the shape's extent as a fraction of ``min(H, W)``.
        shapes: geometries to draw from (:data:`TARGET_SHAPES`).

    Returns:
        ``bool[H, W]``, never empty (it holds at least its centre pixel).
    """
    from skimage.draw import disk, polygon

    h, w = _hw(shape)
    rng = _rng(rng)
    fg = np.ones((h, w), bool) if foreground is None or not np.any(foreground) else np.asarray(foreground, bool)
    ys, xs = np.nonzero(fg)
    k = int(rng.integers(len(ys)))
    cy, cx = float(ys[k]), float(xs[k])
    extent = float(rng.uniform(*size_range)) * min(h, w)
    kind = shapes[int(rng.integers(len(shapes)))]
    area = np.zeros((h, w), dtype=bool)
    if kind == "circle":
        area[disk((cy, cx), max(1.0, extent / 2), shape=(h, w))] = True
    elif kind == "rectangle":
        hh, hw = extent * rng.uniform(0.3, 1.0, size=2) / 2
        area[max(0, int(cy - hh)):int(cy + hh) + 1, max(0, int(cx - hw)):int(cx + hw) + 1] = True
    elif kind == "polygon":
        n = int(rng.integers(3, 9))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = extent / 2 * rng.uniform(0.4, 1.0, n)
        area[polygon(cy + radii * np.sin(angles), cx + radii * np.cos(angles), shape=(h, w))] = True
    else:
        raise ValueError(f"target_area: unknown shape {kind!r}; use {TARGET_SHAPES}.")
    area &= fg
    area[int(cy), int(cx)] = True
    return area


def random_affine(image: np.ndarray, mask: np.ndarray, rng: RngLike = None, center: tuple[float, float] | None = None,
                  rotate: float = 180.0, shear: float = 20.0) -> tuple[np.ndarray, np.ndarray]:
    """PRN's Aug2: rotate, shear and shift an anomaly together with its mask.

    The mask's centroid is rotated by ``U(-rotate, rotate)`` degrees and sheared by
    ``U(-shear, shear)`` degrees about itself, then shifted to ``center`` (``(row, col)``; ``None``
    = a random pixel). Returns ``(float32[H, W, 3], bool[H, W])`` (bilinear image, nearest mask).
    """
    from skimage.transform import AffineTransform, warp

    rng = _rng(rng)
    m = np.asarray(mask, bool)
    h, w = m.shape
    if not m.any():
        raise ValueError("random_affine: the anomaly mask is empty.")
    ys, xs = np.nonzero(m)
    src = (float(xs.mean()), float(ys.mean()))  # skimage uses (x, y)
    if center is None:
        center = (float(rng.uniform(0, h - 1)), float(rng.uniform(0, w - 1)))
    dst = (float(center[1]), float(center[0]))
    shape_t = AffineTransform(rotation=np.deg2rad(rng.uniform(-rotate, rotate)),
                              shear=np.deg2rad(rng.uniform(-shear, shear)))
    tform = AffineTransform(translation=(-src[0], -src[1])) + shape_t + AffineTransform(translation=dst)
    out = warp(np.asarray(image, np.float32), tform.inverse, order=1, mode="constant", cval=0.0, preserve_range=True)
    out_mask = warp(m.astype(np.float32), tform.inverse, order=0, mode="constant", cval=0.0, preserve_range=True) > 0.5
    return np.clip(out, 0, 1).astype(np.float32), out_mask


def extended_anomaly(normal: np.ndarray, anomaly: np.ndarray, anomaly_mask: np.ndarray, rng: RngLike = None,
                     foreground: np.ndarray | None = None, beta_range: tuple[float, float] = (0.0, 0.5),
                     n_color: int = 2, max_tries: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """A PRN extended anomaly (Sec. 3.4, Fig. 5, Eq. 4) from one seen anomaly.

    1. ``A``: two colour operations of :data:`EXTENDED_COLOR_AUGMENTATIONS` on the anomalous image
       (Aug1);
    2. ``R``: the defect rotated, sheared and shifted onto a random pixel of a target area ``TA``
       (:func:`target_area` on ``foreground``) by :func:`random_affine` (Aug2), redrawn while ``R``
       does not overlap ``TA`` (after ``max_tries`` the overlap test is dropped);
    3. ``M = mask(R) & TA`` and ``C = M * R`` (the clipped anomaly);
    4. ``E = (1 - M) * N + (1 - beta) * C + beta * M * N`` with the opacity ``beta ~ U[beta_range)``
       (PRN gives no range; a low one keeps the real defect visible).

    Args:
        normal, anomaly: ``float32[H, W, 3]`` in [0, 1] of the same size.
        anomaly_mask: ``bool[H, W]``, the seen anomaly's ground truth (must not be empty).
        foreground: where the defect may go (``None``: anywhere).

    Returns:
        ``(E float32[H, W, 3] in [0, 1], M float32[H, W] in {0, 1})``; pixels outside ``M`` are the
        normal image's, bit for bit.
    """
    n_img = check_float_image(normal, "normal")
    a_img = check_float_image(anomaly, "anomaly")
    if n_img.shape != a_img.shape or n_img.shape[:2] != np.shape(anomaly_mask):
        raise ValueError(f"extended_anomaly: normal {n_img.shape}, anomaly {a_img.shape} and mask "
                         f"{np.shape(anomaly_mask)} must have the same size.")
    rng = _rng(rng)
    h, w = n_img.shape[:2]
    ops = [EXTENDED_COLOR_AUGMENTATIONS[i]
           for i in rng.choice(len(EXTENDED_COLOR_AUGMENTATIONS), n_color, replace=False)]
    a_img = augment_texture(a_img, rng, names=ops)
    area = target_area((h, w), rng, foreground)
    ys, xs = np.nonzero(area)
    for _ in range(max(1, max_tries)):
        k = int(rng.integers(len(ys)))
        r_img, r_mask = random_affine(a_img, anomaly_mask, rng, center=(ys[k], xs[k]))
        m = r_mask & area
        if m.any():
            break
    else:
        m = r_mask
    beta = np.float32(rng.uniform(*beta_range))
    blended = np.clip((1.0 - beta) * r_img + beta * n_img, 0.0, 1.0)
    out = np.where(m[..., None], blended, n_img).astype(np.float32)
    return out, m.astype(np.float32)


def simulated_anomaly(image: np.ndarray, source: np.ndarray, rng: RngLike = None,
                      foreground: np.ndarray | None = None, beta_range: tuple[float, float] = (0.0, 0.8),
                      min_scale: int = 0, max_scale: int = 6, threshold: float = 0.5,
                      max_tries: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Paste ``source`` into ``image`` through a Perlin region restricted to the target area.

    ``M = perlin_mask(...) & foreground`` (redrawn while empty; after ``max_tries`` the Perlin region
    alone is used), ``beta ~ U[beta_range)``, and
    ``out = (1 - M) * image + (1 - beta) * M * source + beta * M * image``.

    Returns:
        ``(float32[H, W, 3] in [0, 1], mask float32[H, W] in {0, 1})``, mask never empty.
    """
    img = check_float_image(image)
    src = check_float_image(source, "source")
    rng = _rng(rng)
    h, w = img.shape[:2]
    fg = np.ones((h, w), bool) if foreground is None else np.asarray(foreground, bool)
    for _ in range(max(1, max_tries)):
        region = perlin_mask((h, w), rng, min_scale=min_scale, max_scale=max_scale, threshold=threshold)
        m = region & fg
        if m.any():
            break
    else:
        m = region
    beta = np.float32(rng.uniform(*beta_range))
    blended = np.clip((1.0 - beta) * src + beta * img, 0.0, 1.0)
    return np.where(m[..., None], blended, img).astype(np.float32), m.astype(np.float32)


def heterologous_anomaly(image: np.ndarray, rng: RngLike = None, textures: TextureSource | None = None,
                         foreground: np.ndarray | None = None, n_augment: int = 3,
                         **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """PRN's heterologous anomaly (HEA): Perlin region x a random augmented texture (as DRAEM),
    placed in the target area. ``kwargs`` go to :func:`simulated_anomaly`."""
    rng = _rng(rng)
    textures = textures if textures is not None else _default_textures()
    tex = augment_texture(textures.sample(rng, check_float_image(image).shape[:2]), rng, n=n_augment)
    return simulated_anomaly(image, tex, rng, foreground, **kwargs)


def homologous_anomaly(image: np.ndarray, normal: np.ndarray, rng: RngLike = None,
                       foreground: np.ndarray | None = None, n_augment: int = 3,
                       **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """PRN's homologous anomaly (HOA): Perlin region x an augmented *normal* image.

    ``normal`` (another or the same normal image) is flipped at random, shifted by a random offset
    (cyclically, so its structure is misaligned with ``image``) and changed by ``n_augment`` of
    :data:`TEXTURE_AUGMENTATIONS`; then :func:`simulated_anomaly` pastes it into the target area.
    """
    rng = _rng(rng)
    src = check_float_image(normal, "normal")
    if rng.uniform() < 0.5:
        src = src[:, ::-1]
    if rng.uniform() < 0.5:
        src = src[::-1]
    h, w = src.shape[:2]
    shift = (int(rng.integers(h // 8, h - h // 8 + 1)), int(rng.integers(w // 8, w - w // 8 + 1)))
    src = np.roll(src, shift, axis=(0, 1))
    src = augment_texture(np.ascontiguousarray(src), rng, n=n_augment)
    return simulated_anomaly(image, src, rng, foreground, **kwargs)


__all__ += ["EXTENDED_COLOR_AUGMENTATIONS", "TARGET_SHAPES", "foreground_mask", "target_area", "random_affine",
            "extended_anomaly", "simulated_anomaly", "heterologous_anomaly", "homologous_anomaly"]
