"""SynthAD generator: determinism, layouts, masks, manifest, skip/overwrite/ensure, readers."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nbhelpers.data import synth
from nbhelpers.data.synth import logical, writer
from nbhelpers.data.synth.primitives import _f32
from nbhelpers.data.synth import (CATEGORIES, SYNTH_PRESETS, category_plan, ensure, generate, load_manifest,
                                  render_sample)
from nbhelpers.errors import ConfigError, DatasetError

SMOKE = SYNTH_PRESETS["smoke"]
SUBSET = ["grass", "washer", "nuts"]  # one texture, one object, one logical category


def _files(root: Path, categories: list[str]) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for c in categories for p in sorted((root / c).rglob("*"))
            if p.is_file()}


def _arr(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


# ----------------------------------------------------------------------------------- determinism
def test_same_seed_gives_byte_identical_files(synth_root, tmp_path):
    again = generate(tmp_path / "again", SUBSET, preset="smoke", seed=0, progress=False)
    a, b = _files(synth_root, SUBSET), _files(again, SUBSET)
    assert a.keys() == b.keys() and len(a) > 50
    assert [k for k in a if a[k] != b[k]] == []


def test_other_seed_gives_other_images(synth_root, tmp_path):
    other = generate(tmp_path / "other", ["grass", "nuts"], preset="smoke", seed=1, progress=False)
    a, b = _files(synth_root, ["grass", "nuts"]), _files(other, ["grass", "nuts"])
    assert a.keys() == b.keys()
    images = [k for k in a if k.endswith(".png") and "ground_truth" not in k]
    assert sum(a[k] != b[k] for k in images) == len(images)


def test_png_files_carry_no_metadata(synth_root):
    img = Image.open(synth_root / "grass" / "train" / "good" / "000.png")
    assert img.mode == "RGB" and not {"date:create", "Creation Time", "tIME"} & set(img.info)


# ---------------------------------------------------------------------------------------- layout
@pytest.mark.parametrize("name", list(CATEGORIES))
def test_layout_counts_and_masks(synth_root, name):
    spec, cat = CATEGORIES[name], synth_root / name
    plan = category_plan(name, SMOKE)
    written = sorted(str(p.relative_to(cat)) for p in cat.rglob("*.png") if "ground_truth" not in p.parts)
    assert written == sorted(j.relpath for j in plan)
    assert len(list((cat / "train" / "good").glob("*.png"))) == SMOKE["n_train"]
    assert len(list((cat / "test" / "good").glob("*.png"))) == SMOKE["n_test_good"]
    loco = spec.layout == "mvtec_loco"
    if loco:
        assert len(list((cat / "validation" / "good").glob("*.png"))) == SMOKE["n_val"]
        config = json.loads((cat / "defects_config.json").read_text())
        values = {e["pixel_value"]: e for e in config}
    else:
        assert not (cat / "validation").exists()
    for folder in spec.defects:
        n_types = sum(d.folder == folder for d in spec.defect_types)
        assert len(list((cat / "test" / folder).glob("*.png"))) == n_types * SMOKE["n_test_per_defect"]
    for job in (j for j in plan if j.defect is not None):
        image = _arr(cat / job.relpath)
        assert image.shape == (SMOKE["size"], SMOKE["size"], 3) and image.dtype == np.uint8
        if loco:
            masks = sorted((cat / job.mask_relpath).glob("*.png"))
            assert masks, job.relpath
            for m in masks:
                mask = _arr(m)
                assert mask.shape == image.shape[:2] and mask.dtype == np.uint8
                assert set(np.unique(mask)) == {0, job.defect.pixel_value}
                assert job.defect.pixel_value in values
        else:
            mask = _arr(cat / job.mask_relpath)
            assert mask.shape == image.shape[:2] and mask.dtype == np.uint8
            assert set(np.unique(mask)) == {0, 255}, job.relpath


def test_loco_defects_config_is_well_formed(synth_root):
    for name, spec in CATEGORIES.items():
        if spec.layout != "mvtec_loco":
            continue
        config = json.loads((synth_root / name / "defects_config.json").read_text())
        assert isinstance(config, list) and len(config) == len(spec.defect_types)
        for e in config:
            assert set(e) == {"defect_name", "pixel_value", "saturation_threshold", "relative_saturation"}
            assert 0 < e["pixel_value"] <= 255 and isinstance(e["relative_saturation"], bool)
            if e["relative_saturation"]:
                assert 0 < e["saturation_threshold"] <= 1
            else:
                assert isinstance(e["saturation_threshold"], int) and 0 < e["saturation_threshold"] < SMOKE["size"] ** 2
        assert len({e["pixel_value"] for e in config}) == len(config)
        # every value found in a mask is listed
        found = {int(v) for m in (synth_root / name / "ground_truth").rglob("*.png") for v in np.unique(_arr(m)) if v}
        assert found <= {e["pixel_value"] for e in config}
    # the placement rule comes with multi-region ground truth (swapped parts: two regions, a duplicated part: one)
    kit_gt = synth_root / "kit" / "ground_truth" / "logical_anomalies"
    kit_counts = [len(list(d.glob("*.png"))) for d in sorted(kit_gt.iterdir())]
    n = SMOKE["n_test_per_defect"]
    assert kit_counts == [2] * n + [1] * n


# ---------------------------------------------------------------------------------- the pixels
@pytest.mark.parametrize("name", list(CATEGORIES))
def test_defect_changes_pixels_inside_its_region_only(name):
    size = 64
    for dt in CATEGORIES[name].defect_types:
        for index in range(2):
            img, regions = render_sample(name, index, "test", dt.name, size=size)
            clean, none = render_sample(name, index, "test", dt.name, size=size, clean=True)
            assert none == [] and regions
            diff = np.abs(img.astype(int) - clean.astype(int)).max(-1)
            for r in regions:
                assert r.shape == (size, size) and r.sum() >= 4
                assert diff[r].mean() > 8, (name, dt.name, index, diff[r].mean())
            outside = ~np.logical_or.reduce(regions)
            assert (diff[outside] > 24).mean() < 0.01, (name, dt.name, index)


def test_render_sample_matches_written_file(synth_root):
    img, _ = render_sample("nuts", 1, "test", "extra_nut", size=SMOKE["size"])
    # extra_nut is the second logical type: its images follow the n_test_per_defect missing_nut ones
    written = _arr(synth_root / "nuts" / "test" / "logical_anomalies" / f"{SMOKE['n_test_per_defect'] + 1:03d}.png")
    assert np.array_equal(img, written)


@pytest.mark.parametrize("name", list(CATEGORIES))
def test_normal_samples_vary(synth_root, name):
    imgs = [_arr(p).astype(np.float32) for p in sorted((synth_root / name / "train" / "good").glob("*.png"))]
    for a, b in zip(imgs, imgs[1:]):
        assert np.abs(a - b).mean() > 2.0
    assert np.std([im.mean() for im in imgs]) > 0.1


def test_images_are_not_blank():
    for name in CATEGORIES:
        img, _ = render_sample(name, 0, size=64)
        assert img.std() > 10 and 20 < img.mean() < 235


# -------------------------------------------------------------------------------------- manifest
def test_manifest_content(synth_root):
    m = load_manifest(synth_root)
    assert m["name"] == "SynthAD" and m["version"] == synth.VERSION == 2 and m["seed"] == 0 and m["size"] == SMOKE["size"]
    assert list(m["categories"]) == list(CATEGORIES)
    kinds = [e["kind"] for e in m["categories"].values()]
    assert kinds.count("texture") == 3 and kinds.count("object") == 3 and kinds.count("logical") == 3
    for name, e in m["categories"].items():
        spec = CATEGORIES[name]
        assert e["layout"] == ("mvtec_loco" if spec.kind == "logical" else "mvtec_ad")
        assert e["defects"] == spec.defects and e["description"]
        assert e["params"] == SMOKE and e["seed"] == 0 and e["version"] == synth.VERSION
        assert e["counts"]["train"] == SMOKE["n_train"]
    assert m["categories"]["nuts"]["defects"] == ["logical_anomalies", "structural_anomalies"]
    assert m["categories"]["nuts"]["defect_types"]["logical_anomalies"] == ["missing_nut", "extra_nut"]


def test_load_manifest_errors(tmp_path):
    with pytest.raises(DatasetError, match="synthad.json.*missing.*nbhelpers synth"):
        load_manifest(tmp_path)
    (tmp_path / "synthad.json").write_text("{not json")
    with pytest.raises(DatasetError, match="JSON"):
        load_manifest(tmp_path)


# ----------------------------------------------------------------------------------------- errors
def test_unknown_names_raise_config_error(tmp_path):
    with pytest.raises(ConfigError, match="bottle.*brick, grass, gravel"):
        generate(tmp_path, ["bottle"], preset="smoke", progress=False)
    with pytest.raises(ConfigError, match="huge.*smoke, cpu"):
        generate(tmp_path, ["grass"], preset="huge", progress=False)
    with pytest.raises(ConfigError, match="n_images.*n_train"):
        generate(tmp_path, ["grass"], preset="smoke", progress=False, n_images=3)
    with pytest.raises(ConfigError, match="size"):
        generate(tmp_path, ["grass"], preset="smoke", progress=False, size=8)
    with pytest.raises(ConfigError):
        render_sample("grass", 0, "train", defect="scratch")
    assert not any(tmp_path.iterdir())


def test_kinds_and_overrides(tmp_path):
    out = generate(tmp_path, "logical", preset="smoke", progress=False, size=48, n_train=3, n_test_per_defect=1)
    m = load_manifest(out)
    assert list(m["categories"]) == ["nuts", "kit", "cables"]
    assert len(list((out / "kit" / "train" / "good").glob("*.png"))) == 3
    assert Image.open(out / "kit" / "train" / "good" / "000.png").size == (48, 48)
    assert len(list((out / "kit" / "test" / "logical_anomalies").glob("*.png"))) == 2


# ------------------------------------------------------------------------- skip / overwrite / ensure
def test_skip_when_exists_and_overwrite(tmp_path):
    out = generate(tmp_path, ["grass"], preset="smoke", progress=False)
    target = out / "grass" / "train" / "good" / "000.png"
    original = target.read_bytes()
    target.write_bytes(b"user data")
    generate(out, ["grass", "gravel"], preset="smoke", progress=False)
    assert target.read_bytes() == b"user data"  # skipped
    assert (out / "gravel" / "train" / "good" / "000.png").is_file()
    assert list(load_manifest(out)["categories"]) == ["grass", "gravel"]
    generate(out, ["grass"], preset="smoke", progress=False, overwrite=True)
    assert target.read_bytes() == original
    assert sorted(p.name for p in out.iterdir()) == ["grass", "gravel", "synthad.json"]  # no temp folders


def test_interrupted_run_leaves_no_half_category(tmp_path, monkeypatch):
    calls = {"n": 0}
    save = writer._save_png

    def failing(arr, path):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        save(arr, path)

    monkeypatch.setattr(writer, "_save_png", failing)
    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path, ["grass"], preset="smoke", progress=False)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(writer, "_save_png", save)
    generate(tmp_path, ["grass"], preset="smoke", progress=False)
    assert len(list((tmp_path / "grass" / "train" / "good").glob("*.png"))) == SMOKE["n_train"]


def test_ensure_generates_only_what_is_missing_or_stale(tmp_path):
    cats = ["gravel", "cables"]
    ensure(tmp_path, preset="smoke", categories=cats, progress=False)
    stamp = (tmp_path / "gravel" / "train" / "good" / "000.png").stat().st_mtime_ns
    ensure(tmp_path, preset="smoke", categories=cats, progress=False)
    assert (tmp_path / "gravel" / "train" / "good" / "000.png").stat().st_mtime_ns == stamp
    import shutil

    shutil.rmtree(tmp_path / "cables")
    ensure(tmp_path, preset="smoke", categories=cats, progress=False)
    assert (tmp_path / "cables" / "defects_config.json").is_file()
    assert (tmp_path / "gravel" / "train" / "good" / "000.png").stat().st_mtime_ns == stamp
    ensure(tmp_path, preset="smoke", seed=3, categories=["gravel"], progress=False)  # other seed: stale
    assert load_manifest(tmp_path)["categories"]["gravel"]["seed"] == 3
    assert load_manifest(tmp_path)["categories"]["cables"]["seed"] == 0


# ------------------------------------------------------------------------------------------ readers
def test_layout_readers_read_every_category(synth_root):
    from nbhelpers.data.layouts import detect_layout, list_categories, load_split

    assert list_categories(synth_root) == sorted(CATEGORIES)
    for name, spec in CATEGORIES.items():
        assert detect_layout(synth_root, name) == spec.layout
        split = load_split(synth_root, name)
        assert split.layout == spec.layout and split.has_masks
        assert len(split.train) == SMOKE["n_train"]
        assert split.defects == ["good", *sorted(spec.defects)]
        if spec.layout == "mvtec_loco":
            assert len(split.val) == SMOKE["n_val"]
            regions = [r for s in split.test for r in s.regions]
            assert all(r.saturation is not None for r in regions)
            assert any(not r.relative for r in regions) == (name == "nuts")


# ------------------------------------------------------------------------------- the logical rule
def _patches(img: np.ndarray, size: int) -> "torch.Tensor":
    import torch

    t = torch.from_numpy(img).float().permute(2, 0, 1)[None] / 255
    return torch.nn.functional.unfold(t, size // 8, stride=2)[0].T  # [L, 3 * p * p]


@pytest.mark.parametrize("name", [n for n, s in CATEGORIES.items() if s.kind == "logical"])
def test_logical_anomalies_are_made_of_normal_patches(name):
    """The rule of the logical categories: every patch of a logical anomaly has a near-duplicate among
    the normal training patches, so a local detector (the largest nearest-patch distance of an image)
    cannot tell logical anomalies from good images, while it does see the structural defect."""
    import torch

    size, spec = 64, CATEGORIES[name]
    bank = torch.cat([_patches(render_sample(name, i, "train", size=size)[0], size) for i in range(24)])

    def local_score(img: np.ndarray) -> float:
        return float(torch.cdist(_patches(img, size), bank).min(1).values.max())

    good = [local_score(render_sample(name, i, "test", size=size)[0]) for i in range(12)]

    def auroc(kind: str, per_type: int) -> float:
        from nbhelpers.metrics import image_auroc

        bad = [local_score(render_sample(name, i, "test", d.name, size=size)[0])
               for d in spec.defect_types if d.folder == kind for i in range(per_type)]
        return image_auroc(np.r_[good, bad], np.r_[np.zeros(len(good)), np.ones(len(bad))])

    assert auroc(synth.LOGICAL, 8) <= 0.7
    assert auroc(synth.STRUCTURAL, 8) >= 0.8


def test_kit_order_starts_anywhere_and_nut_count_is_fixed():
    """Every part is normal in every slot (only the order is the rule), and the trays hold three nuts."""
    size, centres = 96, [(int(96 * y), int(96 * x)) for y, x in logical._KIT_SLOTS]
    ring = _f32(0.92, 0.45, 0.10)  # the ring's colour: find its slot in each training image
    seen = set()
    for i in range(24):
        img = render_sample("kit", i, "train", size=size)[0].astype(np.float32) / 255
        dist = [np.abs(img[y - 8:y + 8, x - 8:x + 8] - ring).sum(-1).min() for y, x in centres]
        seen.add(int(np.argmin(dist)))
    assert seen == {0, 1, 2, 3}
    compartments = [(int(size * y), int(size * x)) for y, x in logical._NUT_COMPARTMENTS]

    def nuts_in(img: np.ndarray) -> int:  # compartments whose centre shows brass (yellow: red - blue high)
        yellow = (img[..., 0].astype(int) - img[..., 2]) > 60
        return sum(yellow[y - 8:y + 8, x - 8:x + 8].mean() > 0.1 for y, x in compartments)

    assert [nuts_in(render_sample("nuts", i, "train", size=size)[0]) for i in range(8)] == [logical._NUTS_FILLED] * 8
    assert nuts_in(render_sample("nuts", 0, "test", "missing_nut", size=size)[0]) == logical._NUTS_FILLED - 1
    assert nuts_in(render_sample("nuts", 0, "test", "extra_nut", size=size)[0]) == logical._NUTS_FILLED + 1


# --------------------------------------------------------------------------------------- versions
def test_outdated_tree_is_refused_by_load_split_and_regenerated_by_synth(tmp_path):
    from nbhelpers.data.layouts import load_split

    out = generate(tmp_path, ["nuts", "grass"], preset="smoke", progress=False)
    manifest = json.loads((out / synth.MANIFEST).read_text())
    manifest["version"] = 1
    for entry in manifest["categories"].values():  # entries of version 1 had no version field
        del entry["version"]
    (out / synth.MANIFEST).write_text(json.dumps(manifest))
    target = out / "nuts" / "train" / "good" / "000.png"
    target.write_bytes(b"old")
    with pytest.raises(DatasetError, match=r"nuts: written by SynthAD version 1.*version 2.*nbhelpers synth --out"):
        load_split(out, "nuts")
    generate(out, ["nuts"], preset="smoke", progress=False)  # no --overwrite needed: outdated is rewritten
    assert target.read_bytes() != b"old" and len(load_split(out, "nuts").train) == SMOKE["n_train"]
    with pytest.raises(DatasetError, match="grass: written by SynthAD version 1"):  # never mixed
        load_split(out, "grass")
    ensure(out, preset="smoke", categories=["grass"], progress=False)
    assert load_split(out, "grass").category == "grass"


def test_dataset_tag_keys_bench_rows(synth_root, tmp_path):
    from nbhelpers.benchmark import run_key

    assert synth.dataset_tag(synth_root, "nuts") == f"synthad-v{synth.VERSION}"
    assert synth.dataset_tag(tmp_path, "nuts") == ""
    assert run_key("baseline", "nuts", "smoke", 0, synth_root) == f"baseline_nuts_smoke_seed0_synthad-v{synth.VERSION}"
    assert run_key("baseline", "bottle", "cpu", 1, tmp_path) == "baseline_bottle_cpu_seed1"
