"""Reliability, round two (issue 18): no stale or overwritten results, settings checked before work
starts, every bad input one clear line. Cases 1-5, 7, 8 and 11 of the issue (the data-side cases 6,
9 and 10 are in ``test_reliability_data.py``); docs/RELIABILITY.md section 7 maps them."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from nbhelpers import outputs
from nbhelpers.cli import main
from nbhelpers.data.synth import generate, load_manifest
from nbhelpers.methods import create, get_config
from nbhelpers.methods.base import AnomalyMethod
from nbhelpers.provenance import run_digest

SMOKE = ["--preset", "smoke", "--device", "cpu"]


def _run(capsys, argv: list[str]) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of one command; a bad input must never print a traceback."""
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Size and modification time of every file under ``folder``: nothing written may change."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def grass(tmp_path_factory) -> Path:
    """A SynthAD root holding only ``grass`` (smoke), private to the test (it may be copied or changed)."""
    return generate(tmp_path_factory.mktemp("grass"), ["grass"], preset="smoke", progress=False)


@pytest.fixture
def no_fit(monkeypatch):
    """Make any fit fail loudly: a command checked before work starts must never get that far."""
    def fit(self, *args, **kwargs):
        raise AssertionError("a fit started although the settings were bad")

    monkeypatch.setattr(AnomalyMethod, "fit", fit)


@pytest.fixture
def read_only(tmp_path, monkeypatch) -> Path:
    """A folder nothing can be written to. As root (which ignores permission bits) the operating
    system's refusal is simulated at the one place nbhelpers probes it."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    probe = folder / "probe"
    try:
        probe.write_text("x")
        probe.unlink()
        writable = True
    except OSError:
        writable = False
    if writable:
        real = tempfile.mkstemp

        def mkstemp(*args, dir=None, **kwargs):
            if dir is not None and Path(dir).resolve().is_relative_to(folder.resolve()):
                raise PermissionError(13, "Permission denied")
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(outputs.tempfile, "mkstemp", mkstemp)
    yield folder
    folder.chmod(0o755)


# ------------------------------------------------------------------ case 1: rows keyed by what they came from
def test_bench_rows_are_reused_only_for_the_same_settings_and_data(grass, tmp_path, capsys):
    out = tmp_path / "bench"
    base = ["bench", "--method", "baseline", "--category", "grass", "--out", str(out), *SMOKE]
    assert _run(capsys, [*base, "--data", str(grass)])[0] == 0
    (default_row,) = out.glob("baseline_grass_*.json")
    kept = default_row.read_bytes()
    code, _, err = _run(capsys, [*base, "--data", str(grass), "--set", "coreset_ratio=1.0"])
    assert code == 0 and "kept" not in err  # other overrides: computed, not the old row
    (override_row,) = set(out.glob("baseline_grass_*.json")) - {default_row}
    assert json.loads(override_row.read_text())["config"]["coreset_ratio"] == 1.0
    code, _, err = _run(capsys, [*base, "--data", str(grass), "--set", "coreset_ratio=1.0", "--force"])
    assert code == 0 and json.loads(override_row.read_text())["config"]["coreset_ratio"] == 1.0
    assert default_row.read_bytes() == kept  # --force with an override leaves the default row alone
    copy = shutil.copytree(grass, tmp_path / "copy")  # other --data: other files, other row
    code, _, err = _run(capsys, [*base, "--data", str(copy)])
    assert code == 0 and "kept" not in err and len(list(out.glob("baseline_grass_*.json"))) == 3
    code, _, err = _run(capsys, [*base, "--data", str(grass)])
    assert code == 0 and "kept" in err and default_row.read_bytes() == kept  # same settings and data: reused


def test_run_digest_covers_config_data_layout_and_device():
    config = get_config("baseline", "smoke").to_dict()
    digest = run_digest(config, "fp", "mvtec_ad", "cpu")
    assert digest != run_digest({**config, "sigma": 2.0}, "fp", "mvtec_ad", "cpu")
    assert digest != run_digest(config, "other", "mvtec_ad", "cpu")
    assert digest != run_digest(config, "fp", "folder", "cpu")
    assert digest != run_digest(config, "fp", "mvtec_ad", "cuda")
    assert digest == run_digest({**config, "progress": True, "num_workers": 2}, "fp", "mvtec_ad", "cpu")


# ------------------------------------------------------------ cases 2 and 7: settings checked at creation
@pytest.mark.parametrize("setting, key, allowed", [
    ("epochs=-1", "epochs", ">= 1"), ("lr=0", "lr", "> 0"), ("epochs=abc", "epochs", "whole number"),
    ("batch_size=-4", "batch_size", ">= 1"), ("image_size=64.5", "image_size", "whole number")])
def test_bad_settings_fail_before_any_work(grass, tmp_path, capsys, no_fit, setting, key, allowed):
    model = tmp_path / "m.pt"
    code, out, err = _run(capsys, ["train", "--method", "thfr", "--data", str(grass), "--category", "grass",
                                   "--out", str(model), *SMOKE, "--set", setting])
    assert code == 2 and f"thfr: {key}=" in err and allowed in err and "--set" in err
    assert len(err.strip().splitlines()) == 1 and not model.exists()
    code, out, err = _run(capsys, ["bench", "--method", "thfr", "--data", str(grass), "--category", "grass",
                                   "--out", str(tmp_path / "bench"), *SMOKE, "--set", setting])
    assert code == 2 and key in err and not list((tmp_path / "bench").glob("*.json"))


def test_seen_anomalies_beyond_the_test_split_is_refused_with_the_numbers(grass, tmp_path, capsys, no_fit):
    code, _, err = _run(capsys, ["train", "--method", "prn", "--data", str(grass), "--category", "grass",
                                 "--out", str(tmp_path / "m.pt"), *SMOKE, "--seen-anomalies", "100"])
    n = load_manifest(grass)["categories"]["grass"]["counts"]
    anomalous = sum(v for k, v in n.items() if k.startswith("test/") and k != "test/good")
    assert code == 2 and "seen_anomalies=100" in err and f"holds {anomalous} anomalous" in err
    assert f"--seen-anomalies {anomalous - 1}" in err


# ------------------------------------------------------------ case 3: a checkpoint is run as it was trained
@pytest.fixture
def checkpoint(grass, tmp_path, capsys) -> Path:
    path = tmp_path / "ckpt" / "grass.pt"
    assert _run(capsys, ["train", "--method", "baseline", "--data", str(grass), "--category", "grass",
                         "--out", str(path), *SMOKE, "--set", "coreset_ratio=1.0"])[0] == 0
    return path


def test_predict_reads_the_config_of_the_checkpoint(grass, checkpoint, capsys):
    code, out, _ = _run(capsys, ["predict", "--checkpoint", str(checkpoint), "--data", str(grass),
                                 "--category", "grass", "--device", "cpu", "--set", "batch_size=3"])
    assert code == 0 and "grass" in out  # no --preset / --set coreset_ratio needed; batch size may change


@pytest.mark.parametrize("extra, named", [(["--set", "image_size=96"], "image_size=64"),
                                          (["--preset", "smoke"], "coreset_ratio=1.0"),
                                          (["--set", "sigma=1"], "sigma=4.0")])
def test_predict_refuses_a_checkpoint_of_another_configuration(grass, checkpoint, capsys, extra, named):
    code, _, err = _run(capsys, ["predict", "--checkpoint", str(checkpoint), "--data", str(grass),
                                 "--category", "grass", "--device", "cpu", *extra])
    assert code == 2 and str(checkpoint) in err and named in err


def test_predict_refuses_a_checkpoint_of_another_category(grass, checkpoint, synth_root, capsys):
    code, _, err = _run(capsys, ["predict", "--checkpoint", str(checkpoint), "--data", str(synth_root),
                                 "--category", "gravel", "--device", "cpu"])
    assert code == 2 and "fitted on category grass, not gravel" in err


def test_load_refuses_other_config_but_allows_predict_time_fields(checkpoint):
    model = create("baseline", "smoke", device="cpu", coreset_ratio=1.0, batch_size=2, progress=True)
    assert model.load(checkpoint).fitted_on["categories"] == ["grass"]
    with pytest.raises(Exception, match=r"coreset_ratio=1\.0 \(this model: 0\.5\)"):
        create("baseline", "smoke", device="cpu").load(checkpoint)


# ---------------------------------------------------------- cases 4 and 8: outputs checked before any work
def test_train_never_overwrites_a_file_that_is_not_its_own(grass, capsys, no_fit):
    image = next((grass / "grass" / "train" / "good").iterdir())
    before = image.read_bytes()
    code, _, err = _run(capsys, ["train", "--method", "baseline", "--data", str(grass), "--category", "grass",
                                 "--out", str(image), *SMOKE])
    assert code == 2 and str(image) in err and "not a checkpoint" in err and image.read_bytes() == before


def test_train_replaces_its_own_checkpoint_only_with_overwrite(grass, checkpoint, capsys):
    before = checkpoint.read_bytes()
    argv = ["train", "--method", "baseline", "--data", str(grass), "--category", "grass", "--out", str(checkpoint),
            *SMOKE, "--set", "coreset_ratio=1.0"]
    code, _, err = _run(capsys, argv)
    assert code == 2 and "--overwrite" in err and checkpoint.read_bytes() == before
    assert _run(capsys, [*argv, "--overwrite"])[0] == 0


def test_train_into_a_read_only_folder_fails_before_the_fit(grass, read_only, capsys, no_fit):
    code, _, err = _run(capsys, ["train", "--method", "baseline", "--data", str(grass), "--category", "grass",
                                 "--out", str(read_only / "m.pt"), *SMOKE])
    assert code == 2 and str(read_only) in err and "cannot write" in err


def test_bench_out_that_is_a_file_or_read_only_is_refused(grass, tmp_path, read_only, capsys, no_fit):
    a_file = tmp_path / "results.txt"
    a_file.write_text("mine")
    for out in (a_file, read_only / "bench"):
        code, stdout, err = _run(capsys, ["bench", "--data", str(grass), "--category", "grass",
                                          "--out", str(out), *SMOKE])
        assert code == 2 and str(out) in err and stdout == ""
    assert a_file.read_text() == "mine"


# -------------------------------------------------------------- case 5: synth never mixes seeds silently
def test_synth_into_a_folder_of_another_seed_is_refused(grass, capsys):
    before = _snapshot(grass)
    code, _, err = _run(capsys, ["synth", "--out", str(grass), "--categories", "grass", "--preset", "smoke",
                                 "--seed", "1"])
    assert code == 2 and "grass (seed 0, preset smoke)" in err and "--overwrite" in err
    assert _snapshot(grass) == before
    code, out, _ = _run(capsys, ["synth", "--out", str(grass), "--categories", "grass", "--preset", "smoke"])
    assert code == 0 and "kept grass" in out and _snapshot(grass) == before
    code, out, _ = _run(capsys, ["synth", "--out", str(grass), "--categories", "grass", "--preset", "smoke",
                                 "--seed", "1", "--overwrite"])
    manifest = load_manifest(grass)
    assert code == 0 and "wrote grass" in out
    assert manifest["seed"] == 1 and manifest["categories"]["grass"]["seed"] == 1


def test_manifest_gives_a_top_level_seed_only_when_every_category_shares_it(tmp_path):
    generate(tmp_path, ["grass"], preset="smoke", seed=0, progress=False)
    generate(tmp_path, ["gravel"], preset="smoke", seed=3, progress=False)
    manifest = load_manifest(tmp_path)
    assert "seed" not in manifest and manifest["preset"] == "smoke"
    assert {n: e["seed"] for n, e in manifest["categories"].items()} == {"grass": 0, "gravel": 3}


# -------------------------------------------------------------------- case 11: bad data root, exit code 2
def test_bench_with_a_bad_data_root_exits_2_without_a_table(tmp_path, capsys):
    for category in ("all", "grass"):
        code, out, err = _run(capsys, ["bench", "--data", str(tmp_path / "missing"), "--category", category,
                                       "--out", str(tmp_path / "bench"), *SMOKE])
        assert code == 2 and "missing" in err and out == ""


def test_every_output_check_names_the_option(tmp_path):
    with pytest.raises(Exception, match="--out .*is a folder"):
        outputs.check_output_file(tmp_path, "--out")
    (tmp_path / "f").write_text("x")
    with pytest.raises(Exception, match="--out .*existing file"):
        outputs.check_output_folder(tmp_path / "f", "--out")
    assert outputs.check_output_folder(tmp_path / "new" / "deeper").is_dir()
    assert not list((tmp_path / "new" / "deeper").iterdir())  # the write probe leaves nothing


def test_set_values_read_as_json_or_python_literals():
    from nbhelpers.cli import _overrides, build_parser

    args = build_parser().parse_args(["bench", "--set", "use_local=False", "--set", "layers=(1, 2)", "--set",
                                      "d_model=[32,32]", "--set", "weights=null", "--set", "backbone=resnet18",
                                      "--set", "sigma=4"])
    assert _overrides(args) == {"use_local": False, "layers": (1, 2), "d_model": [32, 32], "weights": None,
                                "backbone": "resnet18", "sigma": 4}
