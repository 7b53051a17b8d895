"""Texture sources (DTD or the offline photographs) and DRAEM's texture augmentations."""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps
from scipy import ndimage

from nbhelpers.data.anomalies.perlin import RngLike, _hw, _rng
from nbhelpers.data.io import is_image_file, read_image
from nbhelpers.errors import DatasetError

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
        exclude: names to leave out of the pool: a built-in photograph of that name, or, under
            ``root``, every image whose file stem or folder has that name. Pass the category being
            trained (:meth:`for_category`): SynthAD's ``brick``/``grass``/``gravel`` are cut from the
            built-in photographs of the same name, and pasting a crop of the category's own source
            as an "anomaly" teaches the network that normal texture is anomalous.

    Raises:
        DatasetError: ``root`` does not exist or holds no image file, or ``exclude`` removes every image.
    """

    def __init__(self, root: str | Path | None = None, names: Sequence[str] | None = None,
                 min_crop: float = 0.5, exclude: Sequence[str] = ()):
        self.root = None if root is None else Path(root)
        self.min_crop = float(min_crop)
        self.exclude = tuple(str(e).lower() for e in exclude if e)
        if self.root is None:
            self.names = tuple(n for n in (names or BUILTIN_TEXTURES) if n.lower() not in self.exclude)
            self.paths: list[Path] = []
        else:
            if not self.root.is_dir():
                raise DatasetError(f"{self.root}: texture folder does not exist. Pass a folder of "
                                   "texture images (e.g. dtd/images) or root=None for the built-in ones.")
            self.paths = sorted(p for p in self.root.rglob("*") if is_image_file(p))
            if not self.paths:
                raise DatasetError(f"{self.root}: texture folder holds no image file "
                                   "(.png/.jpg/...). Expected e.g. dtd/images/<class>/*.jpg.")
            self.paths = [p for p in self.paths
                          if not {q.lower() for q in (p.stem, *p.relative_to(self.root).parent.parts)} & set(self.exclude)]
            self.names = tuple(str(p) for p in self.paths)
        if not self.names:
            raise DatasetError(f"TextureSource({self.root or 'skimage.data'}): excluding {list(self.exclude)} "
                               "leaves no texture; pass a texture folder with other images.")

    @classmethod
    def for_category(cls, category: str, root: str | Path | None = None) -> "TextureSource":
        """The texture pool for training on ``category``: every texture except the category's own
        source photograph (see ``exclude``)."""
        return cls(root, exclude=(category,))

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        where = "skimage.data" if self.root is None else str(self.root)
        without = f", without {list(self.exclude)}" if self.exclude else ""
        return f"TextureSource({where!r}, {len(self)} images{without})"

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
