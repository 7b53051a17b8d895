import matplotlib.pyplot as plt
import numpy as np
import pytest

from nbhelpers.explorer import default_thresholds, explorer, is_headless, threshold_panels


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    images = [rng.random((16, 16, 3)) for _ in range(5)]
    maps = [rng.random((8, 8)) for _ in range(5)]
    masks = [rng.random((16, 16)) > 0.8 for _ in range(5)]
    return images, maps, masks


def test_headless_gives_static_small_multiples(data, monkeypatch):
    images, maps, masks = data
    monkeypatch.setenv("NBHELPERS_HEADLESS", "1")
    assert is_headless()
    fig = explorer(images, maps, masks, scores=[0.1] * 5, static_rows=3)
    assert not plt.fignum_exists(fig.number)
    assert len(fig.axes) == 3 * (2 + 3 + 1)  # image, map, 3 thresholds, mask per row


def test_interactive_widget_updates(data):
    ipywidgets = pytest.importorskip("ipywidgets")
    images, maps, masks = data
    box = explorer(images, maps, masks, interactive=True)
    assert isinstance(box, ipywidgets.VBox)
    select, slider = box.children[0].children
    select.value = 3
    slider.value = slider.max  # re-renders without error at the extreme threshold


def test_threshold_panels_binarise(data):
    images = data[0]
    m = np.random.default_rng(1).random((16, 16))
    fig = threshold_panels(images[:1], [m], [0.5])
    binary = np.asarray(fig.axes[2].images[0].get_array())
    assert set(np.unique(binary)) <= {0.0, 1.0}
    assert np.array_equal(binary > 0, m >= 0.5)


def test_default_thresholds_increase(data):
    t = default_thresholds(data[1])
    assert t == sorted(t) and len(t) == 3


def test_speed_accuracy_scatter():
    from nbhelpers.viz import speed_accuracy

    rows = [{"method": m, "ms_per_image": t, "image_auroc": a} for m, t, a in
            [("a", 1.0, 0.9), ("a", 2.0, 0.8), ("b", 10.0, 0.95)]]
    fig = speed_accuracy(rows)
    assert not plt.fignum_exists(fig.number)
    assert len(fig.axes[0].collections) == 4  # points + mean marker per method
    with pytest.raises(ValueError):
        speed_accuracy([])
