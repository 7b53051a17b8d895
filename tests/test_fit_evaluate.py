"""fit_evaluate (a split in memory) and run_benchmark (a dataset on disk) give the same row; the demo picker."""
from __future__ import annotations

import pytest

from nbhelpers.benchmark import fit_evaluate, run_benchmark
from nbhelpers.data import demo_categories
from nbhelpers.data.layouts import load_split
from nbhelpers.methods import create


def test_fit_evaluate_equals_run_benchmark(synth_root):
    row = run_benchmark("baseline", synth_root, "nuts", preset="smoke", device="cpu")
    model, again = fit_evaluate("baseline", load_split(synth_root, "nuts"), "smoke", "cpu", 0)
    assert "predictions" in again and again.pop("predictions")["scores"].shape[0] == row["n_test"]
    for key in ("method", "category", "layout", "preset", "seed", "n_train", "n_test", "image_auroc",
                "image_auroc_logical", "auspro_structural", "params_trainable"):
        assert again[key] == row[key], key
    few = fit_evaluate(create("baseline", "smoke", device="cpu"), load_split(synth_root, "grass"), "smoke",
                       train=load_split(synth_root, "grass").train[:3], keep_predictions=False)[1]
    assert few["n_train"] == 3 and "predictions" not in few


def test_fit_evaluate_holds_out_seen_anomalies(synth_root):
    split = load_split(synth_root, "brick")
    model, row = fit_evaluate("prn", split, "smoke", "cpu", 0, epochs=1, keep_predictions=False)
    assert row["n_seen_anomalies"] == model.seen_anomalies > 0
    assert row["n_test"] == len(split.test) - model.seen_anomalies


def test_demo_categories(synth_root, tmp_path):
    splits = {c: load_split(synth_root, c) for c in ("brick", "capsule", "screw", "kit", "nuts")}
    picks = demo_categories(synth_root, splits, prefer={"object": ["screw"], "logical": ["nuts"]})
    assert picks == {"texture": "brick", "object": "screw", "structural": "brick", "logical": "nuts"}
    assert demo_categories(synth_root, splits)["object"] == "capsule"
    plain = demo_categories(tmp_path, splits)  # not SynthAD: no texture / object labels
    assert plain["texture"] is None and plain["object"] is None and plain["structural"] == "brick"
    assert demo_categories(synth_root, {})["logical"] is None


def test_bench_command_writes_what_fit_or_load_reads(synth_root, tmp_path):
    """A notebook prints `bench_command` for a variant it does not fit; running it makes `is_cached`
    true and `fit_or_load` load that fit (same digest), while another override stays uncached."""
    import shlex

    from nbhelpers.benchmark import bench_command, fit_or_load, is_cached
    from nbhelpers.cli import main

    split = load_split(synth_root, "grass")
    switches = {"coreset_ratio": 1.0}
    assert not is_cached("baseline", split, tmp_path, "smoke", "cpu", 0, **switches)
    command = bench_command("baseline", "grass", "smoke", 0, synth_root, tmp_path, switches)
    assert main(shlex.split(command)[1:] + ["--device", "cpu"]) == 0
    assert is_cached("baseline", split, tmp_path, "smoke", "cpu", 0, **switches)
    assert not is_cached("baseline", split, tmp_path, "smoke", "cpu", 0) and not is_cached("baseline", split, "", "smoke")
    model, row = fit_or_load("baseline", synth_root, "grass", "smoke", device="cpu", bench_dir=tmp_path, **switches)
    assert row["cached"] and model.config.coreset_ratio == 1.0


def test_notebook_fits_read_fit_or_list(synth_root, tmp_path):
    """NotebookFits: a fit outside the declared subset and not in BENCH_DIR is listed with its command
    (nothing fitted); one inside is fitted and kept; afterwards it is read back without fitting."""
    from nbhelpers.benchmark import NotebookFits

    splits = {"grass": load_split(synth_root, "grass")}
    fits = NotebookFits(synth_root, splits, "smoke", "cpu", 0, tmp_path)
    assert fits.get("baseline", "grass", fit_here=False, coreset_ratio=0.5) is None
    assert fits.missing == [f"nbhelpers bench --method baseline --category grass --preset smoke --seed 0 "
                            f"--data {synth_root} --out {tmp_path} --set coreset_ratio=0.5"]
    assert not list(tmp_path.glob("*.json"))
    note = fits.missing_note("ablation", "grass")
    assert "ablation: not all fits are in this run" in note and "--set coreset_ratio=0.5" in note and not fits.missing
    assert fits.missing_note("ablation", "grass") is None
    model, row, predictions = fits.get("baseline", "grass", fit_here=True, coreset_ratio=0.5)
    assert not row["cached"] and predictions["scores"].shape[0] == row["n_test"] and "predictions" not in row
    again = fits.get("baseline", "grass", fit_here=False, coreset_ratio=0.5)
    assert again is not None and again[1]["cached"] and again[1]["image_auroc"] == row["image_auroc"]
    assert not fits.missing
    kept_nothing = NotebookFits(synth_root, splits, "smoke", "cpu", 0, "")
    assert kept_nothing.get("baseline", "grass", fit_here=True)[1]["cached"] is False


def test_notebook_fits_row_reads_the_bench_row_without_loading_the_model(synth_root, tmp_path, monkeypatch):
    """NotebookFits.row: the row ``nbhelpers bench`` wrote is read as it is (no model loaded or evaluated);
    a missing one is fitted inside the declared subset, else listed."""
    import nbhelpers.benchmark as bench

    splits = {"grass": load_split(synth_root, "grass")}
    fits = bench.NotebookFits(synth_root, splits, "smoke", "cpu", 0, tmp_path)
    assert fits.row("baseline", "grass", fit_here=False, coreset_ratio=0.5) is None and len(fits.missing) == 1
    fitted = fits.row("baseline", "grass", fit_here=True, coreset_ratio=0.5)
    assert not fitted["cached"] and "predictions" not in fitted
    monkeypatch.setattr(bench, "fit_or_load", lambda *a, **k: pytest.fail("row() must not load or fit a model"))
    read = fits.row("baseline", "grass", fit_here=False, coreset_ratio=0.5)
    assert read["image_auroc"] == fitted["image_auroc"] and read["config"]["coreset_ratio"] == 0.5
    assert fits.row("baseline", "grass", fit_here=False, coreset_ratio=0.25) is None  # another run: not mixed up
