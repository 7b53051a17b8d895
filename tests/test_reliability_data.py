"""Reliability of the data readers on inputs found by a user review: an MVTec LOCO tree read as
``folder`` (6a), EXIF-rotated photos and masks (6b), images above PIL's decompression-bomb limit (9)
and a plain folder of ``good/`` plus defect folders (10). docs/RELIABILITY.md maps each to its test."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nbhelpers.cli import main
from nbhelpers.data.io import check_image, read_image, read_mask
from nbhelpers.data.layouts import TREES, list_categories, load_split, require_categories
from nbhelpers.errors import DatasetError, DatasetWarning

from test_layouts import make_loco

ORIENTATION = 0x0112  # EXIF tag number
SIDE = 32  # side of the plain-folder fixture images


def _save(arr: np.ndarray, path: Path, orientation: int | None = None) -> Path:
    """Write ``arr`` (``uint8[H, W]`` or ``[H, W, 3]``) to ``path``, with an EXIF orientation tag if given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(arr)
    if orientation is None:
        img.save(path)
    else:
        exif = Image.Exif()
        exif[ORIENTATION] = orientation
        img.save(path, exif=exif.tobytes())
    return path


def _image(path: Path, seed: int, size: tuple[int, int] = (SIDE, SIDE), defect: bool = False) -> Path:
    """A smooth grey image of ``size`` (width, height), with a bright square when ``defect``."""
    w, h = size
    rng = np.random.default_rng(seed)
    arr = (np.add.outer(np.arange(h), np.arange(w)) * 2 + 40 + rng.integers(0, 8, (h, w))).clip(0, 255)
    arr = np.repeat(arr[..., None], 3, -1).astype(np.uint8)
    if defect:
        arr[h // 4: h // 2, w // 4: w // 2] = 255
    return _save(arr, path)


def _no_traceback(capsys: pytest.CaptureFixture) -> str:
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Traceback" not in text
    return text


# ------------------------------------------------------------------- 6a. MVTec LOCO tree read as folder
def test_loco_tree_read_as_folder_warns_what_it_ignores(tmp_path):
    root = make_loco(tmp_path)
    cat = root / "breakfast_box"
    with pytest.warns(DatasetWarning) as record:
        split = load_split(root, "breakfast_box", layout="folder")
    (message,) = [str(r.message) for r in record if issubclass(r.category, DatasetWarning)]
    assert message.startswith(f"{cat}:") and "\n" not in message
    assert "4 mask(s)" in message and "2 validation image(s)" in message and "defects_config.json" in message
    assert "--layout mvtec_loco" in message and "'auto'" in message
    assert split.layout == "folder" and not split.val and not split.has_masks
    with warnings.catch_warnings():
        warnings.simplefilter("error", DatasetWarning)
        auto = load_split(root, "breakfast_box")  # auto detection reads all of it, silently
    assert auto.layout == "mvtec_loco" and len(auto.val) == 2 and auto.has_masks


# --------------------------------------------------------------------------- 6b. EXIF orientation
def test_exif_orientation_is_applied_to_images_masks_and_checked_sizes(tmp_path):
    """Photos stored 40x24 with orientation 6 (rotate 90 degrees clockwise) are used as displayed, 24x40."""
    cat = tmp_path / "widget"
    for i in range(3):
        _image(cat / "train" / "good" / f"{i}.png", seed=i, size=(24, 40))
    _image(cat / "test" / "good" / "g.png", seed=9, size=(24, 40))
    stored = np.full((24, 40, 3), 30, np.uint8)
    stored[:6] = 250  # top rows of the stored pixels: the right columns once displayed
    photo = _save(stored, cat / "test" / "dent" / "a.jpg", orientation=6)
    _save(stored, cat / "test" / "dent" / "b.jpg", orientation=6)
    drawn = np.zeros((40, 24), np.uint8)
    drawn[:, -6:] = 255  # mask drawn on the displayed photo
    _save(drawn, cat / "ground_truth" / "dent" / "a.png")
    tagged = _save(np.where(stored[..., 0] > 128, 255, 0).astype(np.uint8), cat / "ground_truth" / "dent" / "b.png",
                   orientation=6)  # mask stored like its photo, with the same tag
    assert check_image(photo) == (24, 40) and check_image(tagged) == (24, 40)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DatasetWarning)  # one size after orientation: no mixed-size note
        split = load_split(tmp_path, "widget", layout="folder")
    assert split.has_masks and len(split.test) == 3
    pixels = read_image(photo)
    assert pixels.shape == (40, 24, 3) and pixels[:, -4:].mean() > 200 and pixels[:, :4].mean() < 60
    for mask in (cat / "ground_truth" / "dent" / "a.png", tagged):
        assert (read_mask(mask) == (drawn > 0)).all()
    wrong = _save(np.zeros((24, 40), np.uint8), cat / "ground_truth" / "dent" / "a.png")  # drawn on stored pixels
    with pytest.raises(DatasetError) as exc:
        load_split(tmp_path, "widget", layout="folder")
    message = str(exc.value)
    assert str(wrong) in message and "40x24" in message and "24x40" in message
    assert f"{photo} has EXIF orientation 6" in message


# ------------------------------------------------------------------ 9. decompression-bomb limit
def test_image_above_the_decompression_bomb_limit_is_one_dataset_error(tmp_path, monkeypatch, capsys):
    cat = tmp_path / "widget"
    for i in range(3):
        _image(cat / "train" / "good" / f"{i}.png", seed=i, size=(16, 16))
    _image(cat / "test" / "good" / "g.png", seed=5, size=(16, 16))
    _image(cat / "test" / "dent" / "d.png", seed=6, size=(16, 16), defect=True)
    big = _image(cat / "train" / "good" / "big.png", seed=7, size=(32, 32))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)  # PIL refuses above 2 x 300 pixels: big has 1024
    for call in (check_image, read_image, read_mask, lambda p: load_split(tmp_path, "widget")):
        with pytest.raises(DatasetError) as exc:
            call(big)
        message = str(exc.value)
        assert message.startswith(f"{big}:") and "1,024 pixels" in message and "limit of 600" in message
        assert "Downscale it" in message and "PIL.Image.MAX_IMAGE_PIXELS" in message and "\n" not in message
    code = main(["bench", "--data", str(tmp_path), "--category", "widget", "--method", "baseline",
                 "--preset", "smoke", "--out", str(tmp_path / "bench")])
    assert code == 2 and str(big) in _no_traceback(capsys)


# ---------------------------------------------------------- 10. plain folder: good/ plus defect folders
def _plain_category(folder: Path, good: int = 6, defects: tuple[str, ...] = ("scratch", "dent")) -> Path:
    """``folder/good/*.png`` and ``folder/<defect>/*.png`` (2 each): no train/test split, no masks."""
    for i in range(good):
        _image(folder / "good" / f"{i:02d}.png", seed=i)
    for j, defect in enumerate(defects):
        for i in range(2):
            _image(folder / defect / f"{i}.png", seed=100 + 10 * j + i, defect=True)
    return folder


def test_plain_folder_is_split_deterministically(tmp_path):
    root = tmp_path / "mine"
    _plain_category(root / "parts")
    (root / "notes").mkdir()  # a folder without good/ is not a category
    assert list_categories(root) == list_categories(root, "folder") == ["parts"]
    for layout in ("folder", "auto"):
        split = load_split(root, "parts", layout=layout)
        assert split.layout == "folder" and not split.has_masks
        assert split.summary() == {"train": 4, "val": 0, "test/good": 2, "test/dent": 2, "test/scratch": 2}
    again = load_split(root, "parts")
    assert [s.image for s in again.train] == [s.image for s in split.train]
    held = {s.image for s in split.test if s.label == 0}
    assert held.isdisjoint(s.image for s in split.train) and held | {s.image for s in split.train} == set(
        (root / "parts" / "good").glob("*.png"))
    assert "<DATA_ROOT>/<category>/good/*" in TREES["folder"]
    with pytest.raises(DatasetError) as exc:  # DATA_ROOT given as the category folder itself
        require_categories(root / "parts", "folder")
    assert f"set DATA_ROOT to {root}" in str(exc.value) and "<category>/good/*" in str(exc.value)


def test_report_refuses_a_folder_without_categories_before_the_notebook(tmp_path, capsys):
    empty = tmp_path / "loose"
    _image(empty / "a.png", seed=0)  # images, but no category folder
    out = tmp_path / "report.html"
    code = main(["report", "--data", str(empty), "--layout", "folder", "--out", str(out)])
    text = _no_traceback(capsys)
    assert code == 2 and f"{empty}: no category found" in text and "<category>/good/*" in text
    assert not out.exists() and not out.with_suffix("").exists()  # refused before the notebook started


@pytest.mark.notebooks
def test_report_runs_on_a_plain_folder(tmp_path):
    root = tmp_path / "mine"
    _plain_category(root / "parts")
    out = tmp_path / "report.html"
    code = main(["report", "--data", str(root), "--layout", "folder", "--method", "baseline", "--preset", "smoke",
                 "--out", str(out)])
    assert code == 0 and out.is_file()
    html = out.read_text()
    assert "4 trained on, 2 held back for testing" in html and "<code>scratch/</code> 2 tested" in html
    assert "No ground-truth masks" in html and "data:image/png;base64" in html
