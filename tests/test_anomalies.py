"""Perlin masks, DRAEM texture blending and the DRAEM torch dataset."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from nbhelpers.data.anomalies import (
    BUILTIN_TEXTURES,
    TEXTURE_AUGMENTATIONS,
    DraemDataset,
    TextureSource,
    augment_texture,
    augmented_image,
    check_float_image,
    draem_anomaly,
    on_value_grid,
    snap_to_grid,
    transformed_copy,
    perlin_mask,
    perlin_noise,
)
from nbhelpers.errors import DatasetError


@pytest.fixture(scope="module")
def textures() -> TextureSource:
    return TextureSource()


def _image(seed: int = 0, size: tuple[int, int] = (64, 64)) -> np.ndarray:
    """A smooth float image in [0, 1] (gradient + a little noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size[0], 0:size[1]] / max(size)
    base = np.stack([yy, xx, 0.5 * (yy + xx)], axis=-1) * 0.6 + 0.2
    return np.clip(base + rng.normal(0, 0.02, base.shape), 0, 1).astype(np.float32)


# ------------------------------------------------------------------------------------------ Perlin


@pytest.mark.parametrize("shape,res", [((37, 53), (4, 8)), ((256, 256), (8, 8)), ((37, 53), (32, 32)),
                                       ((1, 5), (1, 1)), ((100, 30), (3, 7))])
def test_perlin_noise_any_shape(shape, res):
    n = perlin_noise(shape, res, np.random.default_rng(0))
    assert n.shape == shape and n.dtype == np.float32
    assert np.isfinite(n).all()
    assert n.min() >= -1.0 - 1e-5 and n.max() <= 1.0 + 1e-5


def test_perlin_noise_range_and_determinism():
    lo, hi = [], []
    for s in range(30):
        n = perlin_noise((64, 64), (4, 4), np.random.default_rng(s))
        lo.append(n.min())
        hi.append(n.max())
    assert min(lo) < -0.5 and max(hi) > 0.5  # uses most of [-1, 1]
    a = perlin_noise((37, 53), (2, 4), np.random.default_rng(7))
    b = perlin_noise((37, 53), (2, 4), np.random.default_rng(7))
    c = perlin_noise((37, 53), (2, 4), np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_perlin_noise_is_smooth():
    n = perlin_noise((128, 128), (4, 4), np.random.default_rng(1))
    # neighbouring pixels differ little compared to the overall spread (it is not white noise)
    assert np.abs(np.diff(n, axis=0)).mean() < 0.05 * (n.max() - n.min())


def test_perlin_mask_never_empty_and_binary():
    for s in range(40):
        m = perlin_mask((48, 40), np.random.default_rng(s))
        assert m.dtype == bool and m.shape == (48, 40)
        assert m.any()
    # an unreachable threshold still yields a non-empty mask (fallback)
    m = perlin_mask((32, 32), np.random.default_rng(0), threshold=5.0, max_tries=2)
    assert m.any() and not m.all()


def test_perlin_mask_deterministic_and_varied():
    a = perlin_mask((64, 64), np.random.default_rng(3))
    b = perlin_mask((64, 64), np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    fractions = [perlin_mask((64, 64), np.random.default_rng(s), rotate=False).mean() for s in range(20)]
    assert 0.0 < np.mean(fractions) < 0.5


# ---------------------------------------------------------------------------------------- textures


def test_builtin_textures_offline(textures):
    assert len(textures) == len(BUILTIN_TEXTURES) >= 8
    for s in range(5):
        t = textures.sample(np.random.default_rng(s), (40, 70))
        assert t.shape == (40, 70, 3) and t.dtype == np.float32
        assert 0.0 <= t.min() and t.max() <= 1.0
    np.testing.assert_array_equal(textures.sample(np.random.default_rng(1), 32),
                                  textures.sample(np.random.default_rng(1), 32))


def test_texture_folder(tmp_path):
    sub = tmp_path / "dtd" / "images" / "banded"
    sub.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (30 + i, 50, 3), dtype=np.uint8)).save(sub / f"t{i}.png")
    (sub / "notes.txt").write_text("not an image")
    (tmp_path / "dtd" / "images" / "gray.png").parent.mkdir(exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(tmp_path / "dtd" / "images" / "gray.png")
    src = TextureSource(tmp_path / "dtd" / "images")
    assert len(src) == 4
    t = src.sample(np.random.default_rng(0), (16, 24))
    assert t.shape == (16, 24, 3) and t.dtype == np.float32 and 0 <= t.min() and t.max() <= 1


def test_texture_folder_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    with pytest.raises(DatasetError, match="empty"):
        TextureSource(empty)
    with pytest.raises(DatasetError, match="missing"):
        TextureSource(tmp_path / "missing")


def test_texture_source_leaves_out_the_categorys_own_photograph(tmp_path):
    own = TextureSource.for_category("brick")  # SynthAD's brick is cut from skimage.data.brick
    assert "brick" not in own.names and len(own) == len(BUILTIN_TEXTURES) - 1
    assert "brick" in repr(own)
    assert len(TextureSource.for_category("screw")) == len(BUILTIN_TEXTURES)  # no photograph of its own
    root = tmp_path / "textures"
    (root / "banded").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("banded/a.png", "banded/b.png", "brick.png", "dots.png"):
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(root / name)
    assert len(TextureSource(root)) == 4
    assert sorted(p.name for p in TextureSource.for_category("brick", root).paths) == ["a.png", "b.png", "dots.png"]
    assert [p.name for p in TextureSource(root, exclude=("banded",)).paths] == ["brick.png", "dots.png"]
    with pytest.raises(DatasetError, match="leaves no texture"):
        TextureSource(names=("brick",), exclude=("brick",))


@pytest.mark.parametrize("name", sorted(TEXTURE_AUGMENTATIONS))
def test_each_augmentation_keeps_shape_and_range(name, textures):
    tex = textures.sample(np.random.default_rng(0), (33, 47))
    out = augment_texture(tex, np.random.default_rng(1), names=[name])
    assert out.shape == tex.shape and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_augment_texture_picks_three_and_changes(textures):
    assert len(TEXTURE_AUGMENTATIONS) == 10
    tex = textures.sample(np.random.default_rng(0), 32)
    outs = [augment_texture(tex, np.random.default_rng(s)) for s in range(5)]
    assert all(o.shape == tex.shape for o in outs)
    assert sum(not np.allclose(o, tex, atol=1e-3) for o in outs) >= 4
    np.testing.assert_array_equal(augment_texture(tex, np.random.default_rng(9)),
                                  augment_texture(tex, np.random.default_rng(9)))


# ------------------------------------------------------------------------------------------- DRAEM


def test_draem_blend_inside_only_and_visible(textures):
    changes = []
    for s in range(25):
        img = _image(s)
        aug, mask, label = draem_anomaly(img, np.random.default_rng(s), textures, anomaly_prob=1.0)
        assert aug.shape == img.shape and aug.dtype == np.float32
        assert mask.shape == img.shape[:2] and mask.dtype == np.float32
        assert set(np.unique(mask)) <= {0.0, 1.0}
        assert label == int(mask.any()) == 1
        assert 0.0 <= aug.min() and aug.max() <= 1.0
        outside = mask == 0
        np.testing.assert_array_equal(aug[outside], img[outside])  # bit-exact outside
        inside = mask == 1
        assert not np.array_equal(aug[inside], img[inside])
        changes.append(np.abs(aug[inside] - img[inside]).mean())
    # the pasted texture is clearly visible (the uint8-vs-float bug gave ~0.003 here)
    assert np.mean(changes) > 0.05
    assert np.median(changes) > 0.03


def test_draem_clean_samples(textures):
    img = _image(1)
    aug, mask, label = draem_anomaly(img, np.random.default_rng(0), textures, anomaly_prob=0.0)
    np.testing.assert_array_equal(aug, img)
    assert label == 0 and mask.sum() == 0
    labels = [draem_anomaly(img, np.random.default_rng(s), textures)[2] for s in range(60)]
    assert 15 < sum(labels) < 45  # about half


def test_draem_beta_one_keeps_image(textures):
    img = _image(2)
    aug, mask, label = draem_anomaly(img, np.random.default_rng(0), textures, anomaly_prob=1.0,
                                     beta_range=(1.0, 1.0))
    np.testing.assert_allclose(aug, img, atol=1e-6)
    assert label == 1


def test_draem_deterministic(textures):
    img = _image(3)
    a = draem_anomaly(img, np.random.default_rng(5), textures, anomaly_prob=1.0)
    b = draem_anomaly(img, np.random.default_rng(5), textures, anomaly_prob=1.0)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_draem_rejects_uint8_and_out_of_range(textures):
    img = (_image(0) * 255).astype(np.uint8)
    with pytest.raises(TypeError, match="uint8"):
        draem_anomaly(img, np.random.default_rng(0), textures, anomaly_prob=1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        draem_anomaly(img.astype(np.float32), np.random.default_rng(0), textures, anomaly_prob=1.0)
    with pytest.raises(ValueError):
        check_float_image(np.full((4, 4, 3), -0.5, np.float32))
    with pytest.raises(ValueError, match="shape"):
        draem_anomaly(np.zeros((8, 8), np.float32), np.random.default_rng(0), textures)


def _grid_image(seed: int = 0, size: tuple[int, int] = (32, 32)) -> np.ndarray:
    return (np.round(_image(seed, size) * 255) / 255).astype(np.float32)


def test_transformed_copy_is_identity_translation_or_rotation():
    img = _grid_image(0)
    kinds = set()
    for s in range(30):
        out = transformed_copy(img, np.random.default_rng(s))
        assert out.shape == img.shape and out.dtype == img.dtype
        np.testing.assert_array_equal(np.sort(out.ravel()), np.sort(img.ravel()))  # pixels move, values do not
        if np.array_equal(out, img):
            kinds.add("identity")
        elif any(np.array_equal(out, np.rot90(img, k, axes=(0, 1))) for k in (1, 2, 3)):
            kinds.add("rotation")
        else:
            assert any(np.array_equal(out, np.roll(img, (dy, dx), axis=(0, 1))) for dy in range(32) for dx in range(32))
            kinds.add("translation")
    assert kinds == {"identity", "rotation", "translation"}
    wide = _grid_image(1, (16, 24))
    assert transformed_copy(wide, np.random.default_rng(0)).shape == wide.shape


def test_augmented_image_merges_the_copy_with_the_texture(textures):
    img = _grid_image(2)
    tex = textures.sample(np.random.default_rng(0), 32)
    np.testing.assert_array_equal(augmented_image(img, tex, np.random.default_rng(1), (0.0, 0.0)), tex)
    only_copy = augmented_image(img, tex, np.random.default_rng(1), (1.0, 1.0))
    np.testing.assert_array_equal(np.sort(only_copy.ravel()), np.sort(img.ravel()))
    rng = np.random.default_rng(3)
    weight = rng.uniform(0.0, 0.5)  # the default: the texture always dominates
    want = weight * transformed_copy(img, rng) + (1 - weight) * tex  # the same draws, in order
    np.testing.assert_allclose(augmented_image(img, tex, np.random.default_rng(3)), want, atol=1e-6)


def test_value_grid_helpers():
    assert on_value_grid(np.array([0.0, 1.0, 17 / 255], np.float32))
    assert not on_value_grid(np.array([0.5], np.float32))  # 127.5 / 255
    snapped = snap_to_grid(np.array([0.5, 0.0021, 0.999], np.float32))
    assert on_value_grid(snapped) and snapped.dtype == np.float32
    np.testing.assert_allclose(snapped, [128 / 255, 1 / 255, 1.0], atol=1e-7)


def test_draem_self_mix_pastes_on_the_image_value_grid(textures):
    img = _grid_image(4)
    assert on_value_grid(img)
    for s in range(10):
        aug, mask, _ = draem_anomaly(img, np.random.default_rng(s), textures, anomaly_prob=1.0, self_mix=True)
        assert on_value_grid(aug)  # pasted pixels cannot be spotted by off-grid values
        np.testing.assert_array_equal(aug[mask == 0], img[mask == 0])
        plain, plain_mask, _ = draem_anomaly(img, np.random.default_rng(s), textures, anomaly_prob=1.0)
        assert on_value_grid(plain)
    off_grid = _image(4, (32, 32))  # not from an 8-bit file: left as computed
    aug, mask, _ = draem_anomaly(off_grid, np.random.default_rng(0), textures, anomaly_prob=1.0)
    assert not on_value_grid(aug[mask == 1])
    ds = DraemDataset([(img * 255).astype(np.uint8)] * 4, size=32, textures=textures, anomaly_prob=1.0,
                      self_mix=True, rotate_prob=1.0)
    assert all(on_value_grid(ds[i]["augmented"].numpy()) and on_value_grid(ds[i]["image"].numpy()) for i in range(4))


# ----------------------------------------------------------------------------------------- dataset


def test_draem_dataset_items(tmp_path, textures):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        p = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (50, 60, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    ds = DraemDataset(paths, size=32, textures=textures, seed=1, anomaly_prob=1.0)
    assert len(ds) == 3
    item = ds[0]
    assert set(item) == {"image", "augmented", "mask", "label"}
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert item["augmented"].shape == (3, 32, 32) and item["augmented"].dtype == torch.float32
    assert item["mask"].shape == (1, 32, 32) and item["mask"].dtype == torch.float32
    assert item["label"].dtype == torch.long and item["label"].ndim == 0
    assert item["label"].item() == 1 and item["mask"].sum() > 0
    for k in ("image", "augmented", "mask"):
        assert 0.0 <= item[k].min() and item[k].max() <= 1.0
    assert item["image"].max() > 0.5  # [0, 1] scale, not normalised, not 0..1/255
    outside = item["mask"][0] == 0
    assert torch.equal(item["augmented"][:, outside], item["image"][:, outside])
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["augmented"].shape == (3, 3, 32, 32) and batch["label"].shape == (3,)


def test_draem_dataset_determinism_and_epochs(textures):
    arrays = [(_image(i, (40, 40)) * 255).astype(np.uint8) for i in range(2)] + [_image(9, (40, 40))]
    a = DraemDataset(arrays, size=(24, 28), textures=textures, seed=3, anomaly_prob=1.0)
    b = DraemDataset(arrays, size=(24, 28), textures=textures, seed=3, anomaly_prob=1.0)
    c = DraemDataset(arrays, size=(24, 28), textures=textures, seed=4, anomaly_prob=1.0)
    assert a[2]["augmented"].shape == (3, 24, 28)
    for i in range(3):
        assert torch.equal(a[i]["augmented"], b[i]["augmented"])
        assert torch.equal(a[i]["mask"], b[i]["mask"])
    # access order does not matter
    assert torch.equal(a[1]["augmented"], b[1]["augmented"])
    assert any(not torch.equal(a[i]["mask"], c[i]["mask"]) for i in range(3))
    first = [a[i]["mask"] for i in range(3)]
    a.set_epoch(1)
    assert any(not torch.equal(a[i]["mask"], first[i]) for i in range(3))
    a.set_epoch(0)
    assert all(torch.equal(a[i]["mask"], first[i]) for i in range(3))


def test_draem_dataset_clean_half_and_errors(textures):
    arrays = [_image(i, (16, 16)) for i in range(40)]
    ds = DraemDataset(arrays, size=16, textures=textures, seed=0)
    labels = [ds[i]["label"].item() for i in range(len(ds))]
    assert 8 < sum(labels) < 32
    for i in range(len(ds)):
        item = ds[i]
        assert item["label"].item() == int(item["mask"].sum() > 0)
    with pytest.raises(DatasetError):
        DraemDataset([], size=16)
    with pytest.raises(IndexError):
        ds[40]
