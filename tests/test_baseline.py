"""The baseline honours the method contract and finds SynthAD's structural defects."""
import json
import math

import pytest
import torch

from nbhelpers.benchmark import format_table, run_benchmark
from nbhelpers.cli import main
from nbhelpers.data.layouts import load_split
from nbhelpers.errors import ConfigError
from nbhelpers.methods import available, create, get, get_config
from nbhelpers.methods.base import AnomalyResult, PRESET_NAMES
from nbhelpers.coreset import NearestNeighbours, greedy_coreset, nearest_distance
from nbhelpers.methods.baseline import aggregate_patches
from nbhelpers.train import CheckpointError


def test_registry_and_presets():
    assert "baseline" in available()
    for preset in PRESET_NAMES:
        cfg = get_config("baseline", preset)
        assert cfg.image_size > 0
    with pytest.raises(ConfigError, match="valid methods"):
        get("nope")
    with pytest.raises(ConfigError, match="valid presets"):
        get_config("baseline", "huge")
    with pytest.raises(ConfigError, match="bogus"):
        get_config("baseline", "smoke", bogus=1)


def test_nearest_distance_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    q, bank = torch.randn(50, 8, generator=g), torch.randn(70, 8, generator=g)
    brute = torch.tensor([min(float((a - b).norm()) for b in bank) for a in q])
    torch.testing.assert_close(nearest_distance(q, bank, block_rows=7), brute, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("block_rows", [None, 1, 7, 64])
def test_nearest_neighbours_equal_cdist(block_rows):
    """The blocked product with folded norms is torch.cdist's expansion: its numbers to the last bits
    (exactly with the default blocks, which are matrix products like cdist's), for any block size."""
    g = torch.Generator().manual_seed(1)
    q, bank = torch.randn(300, 152, generator=g), torch.randn(500, 152, generator=g)
    nn = NearestNeighbours(bank, block_rows)
    reference = torch.cdist(q, bank).amin(dim=1)
    torch.testing.assert_close(nn(q), reference, rtol=1e-6, atol=1e-6)
    if block_rows is None:
        assert torch.equal(nn(q), reference)
    assert nn.flops(300) == 2 * 300 * 500 * 154


def test_greedy_coreset_matches_a_brute_force_greedy():
    """Each step picks the point farthest from the chosen set, computed with explicit loops."""
    g = torch.Generator().manual_seed(2)
    points = torch.randn(120, 5, generator=g)
    idx = greedy_coreset(points, ratio=0.1, projection_dim=8, seed=3)  # 5 <= 8 dims: no projection
    chosen = [int(idx[0])]
    while len(chosen) < len(idx):
        far = max(range(len(points)), key=lambda i: min(float((points[i] - points[c]).norm()) for c in chosen))
        chosen.append(far)
    assert idx.tolist() == chosen


def test_greedy_coreset_covers_clusters():
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0], [10, 0], [0, 10], [10, 10]])
    points = torch.cat([c + 0.1 * torch.randn(100, 2, generator=g) for c in centers])
    idx = greedy_coreset(points, ratio=4 / 400, projection_dim=8)
    assert len(idx) == 4
    assert len({int(i) // 100 for i in idx}) == 4  # one point from each cluster
    assert len(greedy_coreset(points, ratio=1.0)) == 400


def test_aggregate_patches_shape():
    out = aggregate_patches([torch.randn(2, 4, 8, 8), torch.randn(2, 6, 4, 4)])
    assert out.shape == (2, 10, 8, 8)


def test_fit_predict_save_load(synth_root, tmp_path):
    split = load_split(synth_root, "brick")
    model = create("baseline", "smoke", device="cpu").fit(split.train)
    batch = next(iter(model.loader(split.test[:4])))
    res = model.predict(batch)
    assert isinstance(res, AnomalyResult)
    assert res.scores.shape == (4,) and res.maps.shape == (4, 64, 64)
    torch.testing.assert_close(res.scores, res.maps.flatten(1).amax(1))
    path = model.save(tmp_path / "m.pt")
    again = create("baseline", "smoke", device="cpu").load(path)
    torch.testing.assert_close(again.predict(batch).maps, res.maps)
    with pytest.raises(CheckpointError):
        again.load(tmp_path / "missing.pt")


def test_same_seed_same_scores(synth_root):
    split = load_split(synth_root, "gravel")
    a = create("baseline", "smoke", device="cpu", seed=1).fit(split.train).predict_all(split.test)
    b = create("baseline", "smoke", device="cpu", seed=1).fit(split.train).predict_all(split.test)
    assert torch.equal(a["scores"], b["scores"])


def test_bench_on_structural_and_logical(synth_root, tmp_path):
    row = run_benchmark("baseline", synth_root, "brick", preset="smoke", bench_dir=tmp_path)
    for key in ("image_auroc", "pixel_auroc", "aupro", "fit_s", "ms_per_image", "peak_mem_mb"):
        assert key in row and not math.isnan(row[key])
    assert row["pixel_auroc"] > 0.6  # far above chance even at 64 px with 8 training images
    saved = json.loads((tmp_path / f"{row['run']}.json").read_text())
    assert saved["category"] == "brick" and saved["config"]["image_size"] == 64 and saved["data_fingerprint"]
    logical = [c for c, v in json.loads((synth_root / "synthad.json").read_text())["categories"].items() if v["layout"] == "mvtec_loco"]
    row2 = run_benchmark("baseline", synth_root, logical[0], preset="smoke")
    assert 0.0 <= row2["auspro"] <= 1.0
    for key in ("image_auroc", "auspro"):  # MVTec LOCO's protocol: logical / structural apart, and their mean
        assert row2[f"{key}_mean"] == pytest.approx((row2[f"{key}_logical"] + row2[f"{key}_structural"]) / 2)
    assert "image_auroc_logical" not in row  # MVTec AD layout: no subsets
    table = format_table([row, row2])
    assert "AUsPRO" in table and "Image AUROC logical" in table


def test_cli_bench(synth_root, tmp_path, capsys):
    code = main(["bench", "--method", "baseline", "--data", str(synth_root), "--category", "brick",
                 "--preset", "smoke", "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "brick" in out and "|" in out
    assert json.loads((tmp_path / "results.json").read_text())[0]["method"] == "baseline"
    # bad input is checked before any fit: exit code 2, one line naming it
    assert main(["bench", "--method", "nope", "--data", str(synth_root), "--category", "brick", "--out", str(tmp_path)]) == 2
    assert main(["bench", "--data", str(tmp_path / "missing"), "--category", "x", "--out", str(tmp_path)]) == 2
    assert "missing" in capsys.readouterr().err


def test_hold_out_anomalies_excludes_seen(synth_root):
    from nbhelpers.benchmark import hold_out_anomalies

    split = load_split(synth_root, "brick")
    seen, rest = hold_out_anomalies(split, 3, seed=0)
    assert len(seen) == 3 and all(s.label == 1 for s in seen)
    assert len({s.defect for s in seen}) == 3  # one of each defect type first
    assert not {s.image for s in seen} & {s.image for s in rest.test}
    assert len(rest.test) == len(split.test) - 3
    assert hold_out_anomalies(split, 0)[1] is split


def test_cli_bench_resumes_finished_rows(synth_root, tmp_path, capsys):
    args = ["bench", "--data", str(synth_root), "--category", "grass", "--preset", "smoke", "--out", str(tmp_path)]
    assert main(args) == 0
    row_file = next(tmp_path.glob("baseline_grass_smoke_seed0_synthad-v*.json"))
    row = json.loads(row_file.read_text())
    assert row["params_trainable"] == 0  # the baseline learns nothing by gradient
    row["image_auroc"] = 0.123  # a marker: a resumed run must reuse the file, not recompute
    row_file.write_text(json.dumps(row))
    capsys.readouterr()
    assert main(args) == 0
    assert "0.123" in capsys.readouterr().out
    assert next((tmp_path / "checkpoints").glob("baseline_grass_smoke_seed0_synthad-v*.pt")).is_file()  # notebook 07 reuses the fit
    assert main(args + ["--force"]) == 0
    forced = json.loads(row_file.read_text())
    assert forced["image_auroc"] != 0.123 and not forced["cached"]  # --force refits, not loads


def test_bench_checkpoint_cache(synth_root, tmp_path):
    first = run_benchmark("baseline", synth_root, "grass", preset="smoke", bench_dir=tmp_path)
    again = run_benchmark("baseline", synth_root, "grass", preset="smoke", bench_dir=tmp_path)
    assert not first["cached"] and again["cached"]
    assert again["fit_s"] == first["fit_s"] and again["image_auroc"] == first["image_auroc"]
    other = run_benchmark("baseline", synth_root, "grass", preset="smoke", bench_dir=tmp_path, coreset_ratio=1.0)
    assert not other["cached"] and other["run"] != first["run"]  # other overrides, other checkpoint and row
    refit = run_benchmark("baseline", synth_root, "grass", preset="smoke", bench_dir=tmp_path, refit=True)
    assert not refit["cached"] and refit["fit_s"] != first["fit_s"]


def test_cli_methods_all_lists_every_registered_method():
    from nbhelpers.cli import _methods
    from nbhelpers.methods import available

    assert _methods("all") == available() and "baseline" in _methods("all")
    assert _methods("prn, fod") == ["prn", "fod"]


def test_cli_throughput(synth_root, tmp_path, capsys):
    code = main(["bench", "--throughput", "--data", str(synth_root), "--category", "brick", "--preset", "smoke",
                 "--batch-sizes", "1", "4", "--out", str(tmp_path)])
    assert code == 0
    rows = json.loads((tmp_path / "throughput.json").read_text())
    assert [r["batch_size"] for r in rows] == [1, 4] and all(r["images_per_s"] > 0 for r in rows)
    assert all(r["train_images_per_s"] > 0 and r["peak_gflop_per_s"] > 0 for r in rows)
    out = capsys.readouterr().out
    assert "images/s" in out.replace("images_per_s", "images/s") and "matrix-multiply rate" in out


def test_throughput_counts_the_baselines_work_by_hand(synth_root):
    """FLOPs per image, hand-computed for the smoke baseline (64 px, levels 2-3: 8 x 8 patches of 152
    channels): backbone = the convolutions FlopCounterMode counts on the backbone alone; scoring = the
    nearest-neighbour product (2 x 64 x bank x 154, norms folded in) + the two 64 x 64 Gaussian operator
    products; the kernel row is that nearest-neighbour search."""
    from torch.utils.flop_counter import FlopCounterMode
    from nbhelpers.throughput import throughput

    rows = throughput("baseline", synth_root, "brick", preset="smoke", batch_sizes=(2,), peak=100.0, repeats=1)
    row = rows[0]
    model = create("baseline", "smoke")
    model.fit(load_split(synth_root, "brick").train)
    bank = model.bank.shape[0]
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.backbone(torch.zeros(1, 3, 64, 64))
    assert row["backbone_gflop"] * 1e9 == pytest.approx(counter.get_total_flops())
    assert row["scoring_gflop"] * 1e9 == pytest.approx(2 * 64 * bank * 154 + 2 * (2 * 64 ** 3))
    assert row["kernel"] == "nearest neighbour" and row["kernel_gflop_per_s"] > 0
    assert row["pct_peak"] == pytest.approx(row["gflop_per_s"])  # peak given as 100 GFLOP/s
