import numpy as np
import pytest
import torch
from PIL import Image

from nbhelpers.data.records import Region, Sample
from nbhelpers.data.torchdata import AnomalyDataset, load_regions, make_loader, resize_mask
from nbhelpers.maps import max_score, smooth, upsample


@pytest.fixture
def samples(tmp_path):
    img = np.zeros((40, 30, 3), np.uint8)
    img[..., 0] = 255
    Image.fromarray(img).save(tmp_path / "a.png")
    Image.fromarray(img[..., 0]).save(tmp_path / "gray.png")  # grayscale is accepted
    m1 = np.zeros((40, 30), np.uint8); m1[:10, :10] = 255
    m2 = np.zeros((40, 30), np.uint8); m2[30:, 20:] = 7
    Image.fromarray(m1).save(tmp_path / "m1.png")
    Image.fromarray(m2).save(tmp_path / "m2.png")
    return [Sample(tmp_path / "a.png", 0),
            Sample(tmp_path / "gray.png", 1, "x", regions=(Region(tmp_path / "m1.png", 0.5, True),
                                                           Region(tmp_path / "m2.png", 20, False)))]


def test_batch_contract(samples):
    ds = AnomalyDataset(samples, 32, mean=(0.5,) * 3, std=(0.5,) * 3)
    batch = next(iter(make_loader(ds, batch_size=2)))
    assert batch["image"].shape == (2, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["mask"].shape == (2, 1, 32, 32)
    assert set(batch["mask"].unique().tolist()) <= {0.0, 1.0}
    assert batch["label"].tolist() == [0, 1] and batch["defect"] == ["good", "x"]
    assert batch["image"][0, 0].mean() == pytest.approx(1.0)  # red channel normalised to +1
    assert batch["mask"][0].sum() == 0 and batch["mask"][1].sum() > 0


def test_unnormalised_images_in_unit_range(samples):
    x = AnomalyDataset(samples, 16)[0]["image"]
    assert x.min() >= 0 and x.max() <= 1


def test_regions_with_saturation(samples):
    regions = load_regions(samples[1], 20)
    assert len(regions) == 2
    (m1, s1), (m2, s2) = regions
    assert s1 == pytest.approx(0.5 * m1.sum())
    assert s2 == pytest.approx(min(20 * (400 / 1200), m2.sum()))


def test_resize_mask_nearest():
    m = np.zeros((8, 8), bool); m[:4] = True
    assert resize_mask(m, 4).sum() == 8


def test_map_helpers():
    maps = torch.zeros(2, 4, 4); maps[0, 1, 1] = 1
    up = upsample(maps, 16)
    assert up.shape == (2, 16, 16)
    sm = smooth(up, 2.0)
    assert float(sm.sum()) == pytest.approx(float(up.sum()), rel=0.05) and sm.max() < up.max()
    assert max_score(sm).shape == (2,)


@pytest.mark.parametrize("shape,sigma", [((2, 64, 48), 4.0), ((1, 256, 256), 4.0), ((3, 9, 7), 4.0), ((1, 32, 32), 1.5)])
def test_smooth_is_a_gaussian_filter(shape, sigma):
    """Two operator products equal scipy's Gaussian filter (truncate 4, mirror borders) and torchvision's
    k x k blur; on maps smaller than the kernel, the largest kernel that fits (as gaussian_blur)."""
    from scipy.ndimage import gaussian_filter
    from torchvision.transforms.functional import gaussian_blur

    maps = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    k = min(2 * int(4 * sigma + 0.5) + 1, 2 * min(shape[1:]) - 1)
    torch.testing.assert_close(smooth(maps, sigma), gaussian_blur(maps[:, None], [k, k], [sigma, sigma])[:, 0],
                               rtol=1e-5, atol=1e-6)
    if k == 2 * int(4 * sigma + 0.5) + 1:
        scipy = np.stack([gaussian_filter(m.double().numpy(), sigma, mode="mirror", truncate=4.0) for m in maps])
        torch.testing.assert_close(smooth(maps, sigma), torch.from_numpy(scipy).float(), rtol=1e-5, atol=1e-6)
