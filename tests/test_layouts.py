"""Dataset readers: tiny fixture datasets in every layout, read back, plus one test per malformed case."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nbhelpers.data.layouts import (
    LAYOUTS,
    detect_layout,
    list_categories,
    load_split,
    read_btad,
    read_folder,
    read_mvtec_ad,
    read_mvtec_loco,
    read_visa,
)
from nbhelpers.errors import ConfigError, DatasetError

S = 16  # fixture image side


# ------------------------------------------------------------------------------------------ builders
def _img(path: Path, size: tuple[int, int] = (S, S), seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


def _mask(path: Path, value: int = 255, size: tuple[int, int] = (S, S), noise: int | None = None) -> Path:
    """A mask with a 6x6 square of ``value`` (and 2 pixels of ``noise``, the minority value)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((size[1], size[0]), dtype=np.uint8)
    arr[2:8, 2:8] = value
    if noise is not None:
        arr[12, 12:14] = noise
    Image.fromarray(arr, mode="L").save(path)
    return path


def make_mvtec_ad(root: Path, cat: str = "bottle") -> Path:
    c = root / cat
    for i in range(3):
        _img(c / "train" / "good" / f"{i:03d}.png", seed=i)
    for i in range(2):
        _img(c / "test" / "good" / f"{i:03d}.png", seed=10 + i)
    for defect in ("broken", "contamination"):
        for i in range(2):
            _img(c / "test" / defect / f"{i:03d}.png", seed=20 + i)
            _mask(c / "ground_truth" / defect / f"{i:03d}_mask.png")
    (root / "license.txt").write_text("license")
    (c / "train" / "good" / ".DS_Store").write_bytes(b"\x00\x01junk")
    (c / "test" / "good" / "readme.txt").write_text("not an image")
    return root


LOCO_CONFIG = [
    {"defect_name": "missing_box", "pixel_value": 255, "saturation_threshold": 1.0, "relative_saturation": True},
    {"defect_name": "extra_item", "pixel_value": 254, "saturation_threshold": 40, "relative_saturation": False},
    {"defect_name": "scratch", "pixel_value": 253, "saturation_threshold": 0.5, "relative_saturation": True},
]


def make_loco(root: Path, cat: str = "breakfast_box") -> Path:
    c = root / cat
    (c).mkdir(parents=True)
    (c / "defects_config.json").write_text(json.dumps(LOCO_CONFIG))
    for i in range(3):
        _img(c / "train" / "good" / f"{i:03d}.png", seed=i)
    for i in range(2):
        _img(c / "validation" / "good" / f"{i:03d}.png", seed=5 + i)
    _img(c / "test" / "good" / "000.png")
    for i in range(2):
        _img(c / "test" / "logical_anomalies" / f"{i:03d}.png", seed=30 + i)
    _img(c / "test" / "structural_anomalies" / "000.png", seed=40)
    gt = c / "ground_truth"
    _mask(gt / "logical_anomalies" / "000" / "000.png", 255)
    _mask(gt / "logical_anomalies" / "000" / "001.png", 254, noise=255)  # mostly 254: extra_item
    _mask(gt / "logical_anomalies" / "001" / "000.png", 254)
    _mask(gt / "structural_anomalies" / "000" / "000.png", 253)
    return root


def make_visa(root: Path) -> Path:
    rows = ["object,split,label,image,mask"]
    for obj in ("candle", "pcb1"):
        base = root / obj / "Data"
        for i in range(3):
            rel = f"{obj}/Data/Images/Normal/{i:04d}.JPG"
            _img(root / rel, seed=i)
            rows.append(f"{obj},train,normal,{rel},")
        rel = f"{obj}/Data/Images/Normal/0003.JPG"
        _img(root / rel, seed=3)
        rows.append(f"{obj},test,normal,{rel},")
        for i in range(2):
            rel = f"{obj}/Data/Images/Anomaly/{i:03d}.JPG"
            mrel = f"{obj}/Data/Masks/Anomaly/{i:03d}.png"
            _img(root / rel, seed=50 + i)
            _mask(root / mrel, value=1 if i else 255)  # VisA masks: 0/255 or small integers
            rows.append(f"{obj},test,anomaly,{rel},{mrel}")
        assert base.is_dir()
    (root / "split_csv").mkdir(parents=True)
    (root / "split_csv" / "1cls.csv").write_text("\n".join(rows) + "\n")
    return root


def make_btad(root: Path, cat: str = "01") -> Path:
    c = root / cat
    for i in range(3):
        _img(c / "train" / "ok" / f"{i:04d}.bmp", seed=i)
    _img(c / "test" / "ok" / "0000.bmp")
    for i in range(2):
        _img(c / "test" / "ko" / f"{i:04d}.bmp", seed=60 + i)
        _mask(c / "ground_truth" / "ko" / f"{i:04d}.png")
    return root


def make_folder(root: Path, cat: str = "widget") -> Path:
    c = root / cat
    for i in range(3):
        _img(c / "train" / "good" / f"{i}.jpg", seed=i)
    _img(c / "test" / "good" / "g0.jpg")
    _img(c / "test" / "scratch" / "s0.jpg", seed=70)
    _img(c / "test" / "scratch" / "s1.png", seed=71)  # no mask: masks are optional
    _img(c / "test" / "dent" / "d0.tif", seed=72)
    _mask(c / "ground_truth" / "scratch" / "s0_mask.png")
    _mask(c / "ground_truth" / "dent" / "d0.png")
    return root


BUILDERS = {
    "mvtec_ad": (make_mvtec_ad, "bottle"),
    "mvtec_loco": (make_loco, "breakfast_box"),
    "visa": (make_visa, "candle"),
    "btad": (make_btad, "01"),
    "folder": (make_folder, "widget"),
}


def _msg(exc: pytest.ExceptionInfo) -> str:
    return str(exc.value)


# ------------------------------------------------------------------------------------------ readers
def test_layouts_registry():
    assert set(LAYOUTS) == {"mvtec_ad", "mvtec_loco", "visa", "btad", "folder"}
    assert LAYOUTS["mvtec_ad"] is read_mvtec_ad and LAYOUTS["mvtec_loco"] is read_mvtec_loco
    assert LAYOUTS["visa"] is read_visa and LAYOUTS["btad"] is read_btad and LAYOUTS["folder"] is read_folder


def test_mvtec_ad(tmp_path):
    root = make_mvtec_ad(tmp_path)
    split = read_mvtec_ad(root, "bottle")
    assert split.layout == "mvtec_ad" and split.category == "bottle" and split.root == root
    assert split.summary() == {"train": 3, "val": 0, "test/good": 2, "test/broken": 2, "test/contamination": 2}
    assert split.defects == ["good", "broken", "contamination"]
    assert all(s.label == 0 and s.defect == "good" and not s.regions for s in split.train)
    bad = [s for s in split.test if s.label == 1]
    assert len(bad) == 4 and split.has_masks and not split.is_logical
    for s in bad:
        (region,) = s.regions
        assert region.mask == root / "bottle" / "ground_truth" / s.defect / f"{s.image.stem}_mask.png"
        assert region.saturation is None
    assert [s.image for s in split.test] == sorted(s.image for s in split.test)
    assert all(s.category == "bottle" for s in split.train + split.test)


def test_mvtec_loco(tmp_path):
    root = make_loco(tmp_path)
    split = read_mvtec_loco(root, "breakfast_box")
    assert split.layout == "mvtec_loco" and split.is_logical
    assert split.summary() == {
        "train": 3, "val": 2, "test/good": 1, "test/logical_anomalies": 2, "test/structural_anomalies": 1,
    }
    assert all(s.label == 0 for s in split.val)
    by = {(s.defect, s.image.stem): s for s in split.test}
    two = by[("logical_anomalies", "000")]
    assert [r.mask.name for r in two.regions] == ["000.png", "001.png"]
    # 255 -> relative 1.0; mostly-254 mask (with 255 noise) -> absolute 40 pixels
    assert (two.regions[0].saturation, two.regions[0].relative) == (1.0, True)
    assert (two.regions[1].saturation, two.regions[1].relative) == (40.0, False)
    one = by[("logical_anomalies", "001")].regions
    assert len(one) == 1 and one[0].relative is False
    (st,) = by[("structural_anomalies", "000")].regions
    assert (st.saturation, st.relative) == (0.5, True)
    assert by[("good", "000")].label == 0 and not by[("good", "000")].regions
    assert split.has_masks


def test_visa_filters_by_object(tmp_path):
    root = make_visa(tmp_path)
    split = read_visa(root, "candle")
    assert split.layout == "visa"
    assert split.summary() == {"train": 3, "val": 0, "test/good": 1, "test/anomaly": 2}
    assert all("candle" in s.image.parts for s in split.train + split.test)
    anomalies = [s for s in split.test if s.label == 1]
    assert all(s.defect == "anomaly" and len(s.regions) == 1 for s in anomalies)
    assert anomalies[0].regions[0].mask == root / "candle/Data/Masks/Anomaly/000.png"
    assert split.has_masks
    assert len(read_visa(root, "pcb1").train) == 3


def test_btad(tmp_path):
    root = make_btad(tmp_path)
    split = read_btad(root, "01")
    assert split.summary() == {"train": 3, "val": 0, "test/good": 1, "test/ko": 2}
    assert all(s.label == 0 and s.defect == "good" for s in split.train)
    ko = [s for s in split.test if s.label == 1]
    assert all(s.defect == "ko" and s.regions[0].mask.name == f"{s.image.stem}.png" for s in ko)
    assert split.has_masks


def test_folder_optional_masks(tmp_path):
    root = make_folder(tmp_path)
    split = read_folder(root, "widget")
    assert split.summary() == {"train": 3, "val": 0, "test/good": 1, "test/dent": 1, "test/scratch": 2}
    by = {s.image.name: s for s in split.test}
    assert by["s0.jpg"].regions[0].mask.name == "s0_mask.png"
    assert by["d0.tif"].regions[0].mask.name == "d0.png"
    assert by["s1.png"].regions == () and by["s1.png"].label == 1
    assert not split.has_masks


@pytest.mark.parametrize("layout", list(BUILDERS))
def test_auto_detection(tmp_path, layout):
    build, cat = BUILDERS[layout]
    root = build(tmp_path)
    assert detect_layout(root, cat) == layout
    split = load_split(root, cat)
    assert split.layout == layout and len(split.train) == 3
    assert load_split(str(root), cat, layout=layout).summary() == split.summary()


def test_list_categories(tmp_path):
    root = make_mvtec_ad(tmp_path / "ad")
    make_mvtec_ad(root, "cable")
    (root / "not_a_category").mkdir()
    assert list_categories(root) == ["bottle", "cable"]
    assert list_categories(make_visa(tmp_path / "visa")) == ["candle", "pcb1"]
    assert list_categories(tmp_path / "visa", layout="visa") == ["candle", "pcb1"]


def test_validate_false_skips_header_checks(tmp_path):
    root = make_mvtec_ad(tmp_path)
    (root / "bottle" / "train" / "good" / "999.png").write_bytes(b"not a png")
    assert len(load_split(root, "bottle", validate=False).train) == 4


# ------------------------------------------------------------------------------------- malformed data
def test_missing_train_good(tmp_path):
    root = make_mvtec_ad(tmp_path)
    shutil.rmtree(root / "bottle" / "train" / "good")
    with pytest.raises(DatasetError) as exc:
        read_mvtec_ad(root, "bottle")
    assert str(root / "bottle" / "train" / "good") in _msg(exc) and "train/good/*.png" in _msg(exc)
    with pytest.raises(DatasetError) as exc:  # auto cannot detect anything: explains the tree
        load_split(root, "bottle")
    assert str(root / "bottle" / "train" / "good") in _msg(exc) and "test/<defect>" in _msg(exc)


def test_empty_train_good(tmp_path):
    root = make_folder(tmp_path)
    for p in (root / "widget" / "train" / "good").iterdir():
        p.unlink()
    with pytest.raises(DatasetError) as exc:
        load_split(root, "widget")
    assert str(root / "widget" / "train" / "good") in _msg(exc) and "no image files" in _msg(exc)


def test_mask_without_image(tmp_path):
    root = make_mvtec_ad(tmp_path)
    orphan = _mask(root / "bottle" / "ground_truth" / "broken" / "099_mask.png")
    with pytest.raises(DatasetError) as exc:
        load_split(root, "bottle")
    assert str(orphan) in _msg(exc)
    assert str(root / "bottle" / "test" / "broken" / "099.png") in _msg(exc) and "Expected" in _msg(exc)


def test_mask_wrong_size(tmp_path):
    root = make_mvtec_ad(tmp_path)
    bad = _mask(root / "bottle" / "ground_truth" / "broken" / "001_mask.png", size=(S, S + 4))
    with pytest.raises(DatasetError) as exc:
        load_split(root, "bottle")
    assert str(bad) in _msg(exc) and "16x20" in _msg(exc) and "16x16" in _msg(exc)
    assert "same" in _msg(exc) or "size" in _msg(exc)


def test_corrupt_png(tmp_path):
    root = make_mvtec_ad(tmp_path)
    bad = root / "bottle" / "test" / "good" / "005.png"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 200, dtype=np.uint8).tobytes())
    with pytest.raises(DatasetError) as exc:
        load_split(root, "bottle")
    assert str(bad) in _msg(exc) and "cannot be read as an image" in _msg(exc) and "Expected" in _msg(exc)


def test_missing_root(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError) as exc:
        load_split(missing, "bottle")
    assert str(missing) in _msg(exc) and "data/README.md" in _msg(exc)
    with pytest.raises(DatasetError):
        list_categories(missing)


def test_missing_category_lists_existing(tmp_path):
    root = make_mvtec_ad(tmp_path)
    make_mvtec_ad(root, "cable")
    with pytest.raises(DatasetError) as exc:
        load_split(root, "screw")
    assert str(root / "screw") in _msg(exc) and "bottle, cable" in _msg(exc) and "CATEGORY" in _msg(exc)
    visa = make_visa(tmp_path / "visa")
    with pytest.raises(DatasetError) as exc:
        load_split(visa, "fryum")
    assert "candle, pcb1" in _msg(exc) and "1cls.csv" in _msg(exc)


def test_category_folder_given_as_root(tmp_path):
    root = make_mvtec_ad(tmp_path)
    with pytest.raises(DatasetError) as exc:
        load_split(root / "bottle", "bottle")
    assert f"set DATA_ROOT to {root}" in _msg(exc)


def test_unknown_layout(tmp_path):
    root = make_mvtec_ad(tmp_path)
    with pytest.raises(ConfigError) as exc:
        load_split(root, "bottle", layout="mvtec")
    assert "'mvtec'" in _msg(exc) and all(name in _msg(exc) for name in LAYOUTS)
    with pytest.raises(ConfigError):
        list_categories(root, layout="nope")


def test_loco_mask_value_missing_from_config(tmp_path):
    root = make_loco(tmp_path)
    bad = _mask(root / "breakfast_box" / "ground_truth" / "structural_anomalies" / "000" / "001.png", 7)
    with pytest.raises(DatasetError) as exc:
        load_split(root, "breakfast_box")
    config = root / "breakfast_box" / "defects_config.json"
    assert str(bad) in _msg(exc) and str(config) in _msg(exc) and "pixel value 7" in _msg(exc)
    assert "255 (missing_box)" in _msg(exc)


def test_loco_missing_or_bad_config(tmp_path):
    root = make_loco(tmp_path)
    config = root / "breakfast_box" / "defects_config.json"
    config.write_text(json.dumps([{"defect_name": "x"}]))
    with pytest.raises(DatasetError) as exc:
        read_mvtec_loco(root, "breakfast_box")
    assert str(config) in _msg(exc) and "pixel_value" in _msg(exc)
    config.unlink()
    with pytest.raises(DatasetError) as exc:
        read_mvtec_loco(root, "breakfast_box")
    assert str(config) in _msg(exc)


def test_anomaly_without_required_mask(tmp_path):
    root = make_mvtec_ad(tmp_path)
    (root / "bottle" / "ground_truth" / "broken" / "000_mask.png").unlink()
    with pytest.raises(DatasetError) as exc:
        load_split(root, "bottle")
    assert str(root / "bottle" / "test" / "broken" / "000.png") in _msg(exc) and "000_mask.png" in _msg(exc)
    loco = make_loco(tmp_path / "loco")
    shutil.rmtree(loco / "breakfast_box" / "ground_truth" / "structural_anomalies" / "000")
    with pytest.raises(DatasetError) as exc:
        load_split(loco, "breakfast_box")
    assert str(loco / "breakfast_box" / "test" / "structural_anomalies" / "000.png") in _msg(exc)


def test_empty_test_split(tmp_path):
    root = make_btad(tmp_path)
    shutil.rmtree(root / "01" / "test")
    (root / "01" / "test" / "ok").mkdir(parents=True)
    shutil.rmtree(root / "01" / "ground_truth")
    with pytest.raises(DatasetError) as exc:
        load_split(root, "01")
    assert str(root / "01" / "test") in _msg(exc) and "empty" in _msg(exc)


def test_visa_bad_rows(tmp_path):
    root = make_visa(tmp_path)
    csv_path = root / "split_csv" / "1cls.csv"
    (root / "candle/Data/Images/Anomaly/001.JPG").unlink()
    with pytest.raises(DatasetError) as exc:
        read_visa(root, "candle")
    assert str(root / "candle/Data/Images/Anomaly/001.JPG") in _msg(exc) and str(csv_path) in _msg(exc)
    csv_path.write_text("object,split,image\ncandle,train,x.JPG\n")
    with pytest.raises(DatasetError) as exc:
        read_visa(root, "candle")
    assert str(csv_path) in _msg(exc) and "object,split,label,image,mask" in _msg(exc)
