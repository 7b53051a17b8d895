"""Reliability (issue 8): bad input, bad configuration, faults during training, reproducibility,
batch runs and checkpoint safety. docs/RELIABILITY.md maps every case to its test (here or in the
module's own test file)."""
from __future__ import annotations

import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from nbhelpers.benchmark import format_table, run_benchmark
from nbhelpers.cli import main
from nbhelpers.data.io import read_image, read_mask
from nbhelpers.data.layouts import load_split
from nbhelpers.data.torchdata import AnomalyDataset
from nbhelpers.errors import ConfigError, DatasetError, DatasetWarning, DeviceMemoryError
from nbhelpers.methods import available, create, get_config
from nbhelpers.methods.baseline import Baseline
from nbhelpers.train import CheckpointError, TrainingError, fit, load_checkpoint

from method_checks import check_resume_matches_uninterrupted, check_same_seed_same_scores, trained_methods

S = 16  # side of the fixture images


def _image(path: Path, size: tuple[int, int] = (S, S), seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def _folder_dataset(root: Path, normal_test: int = 2, anomalous_test: int = 2) -> Path:
    """``root/widget`` in the folder layout: 4 train images, test images with masks."""
    cat = root / "widget"
    for i in range(4):
        _image(cat / "train" / "good" / f"{i}.png", seed=i)
    for i in range(normal_test):
        _image(cat / "test" / "good" / f"{i}.png", seed=10 + i)
    for i in range(anomalous_test):
        _image(cat / "test" / "dent" / f"{i}.png", seed=20 + i)
        mask = np.zeros((S, S), np.uint8)
        mask[4:9, 4:9] = 255
        (cat / "ground_truth" / "dent").mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(cat / "ground_truth" / "dent" / f"{i}.png")
    return root


# ------------------------------------------------------------------------------------------ 1. bad data
@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_image_is_caught_by_the_reader(tmp_path, suffix):
    root = _folder_dataset(tmp_path)
    bad = tmp_path / "widget" / "train" / "good" / f"big{suffix}"
    ramp = np.add.outer(np.arange(64), np.arange(64)).astype(np.uint8)
    Image.fromarray(np.stack([ramp, ramp.T, 255 - ramp], -1)).save(bad)
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])  # the header is intact: only a full read notices
    with pytest.raises(DatasetError) as exc:
        load_split(root, "widget")
    assert str(bad) in str(exc.value) and "truncated" in str(exc.value) and "replace or delete" in str(exc.value)


def test_non_image_file_with_image_suffix(tmp_path):
    root = _folder_dataset(tmp_path)
    bad = tmp_path / "widget" / "test" / "good" / "notes.png"
    bad.write_text("these are my notes, not a picture")
    with pytest.raises(DatasetError) as exc:
        load_split(root, "widget")
    assert str(bad) in str(exc.value) and "cannot be read as an image" in str(exc.value)
    assert "without an image suffix" in str(exc.value) and "are ignored" in str(exc.value)


def test_grayscale_rgba_palette_and_16_bit_images_are_converted(tmp_path):
    root = _folder_dataset(tmp_path)
    good = tmp_path / "widget" / "train" / "good"
    gray = np.tile(np.arange(S, dtype=np.uint8) * 16, (S, 1))
    Image.fromarray(gray, mode="L").save(good / "gray.png")
    rgba = np.dstack([np.full((S, S, 3), (200, 100, 50), np.uint8), np.full((S, S), 7, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(good / "rgba.png")
    Image.fromarray(gray, mode="L").convert("P").save(good / "palette.png")
    deep = np.full((S, S), 65535, np.uint16)
    deep[:, : S // 2] = 32768
    Image.fromarray(deep).save(good / "deep.png")  # 16-bit grayscale (mode I;16)
    Image.fromarray(gray, mode="L").save(good / "gray.tif")
    split = load_split(root, "widget")
    assert len(split.train) == 9
    for name in ("gray.png", "rgba.png", "palette.png", "deep.png", "gray.tif"):
        arr = read_image(good / name)
        assert arr.dtype == np.uint8 and arr.shape == (S, S, 3), name
    assert (read_image(good / "gray.png")[..., 0] == gray).all() and (read_image(good / "gray.tif")[..., 1] == gray).all()
    assert (read_image(good / "rgba.png") == (200, 100, 50)).all()  # alpha dropped, colours kept
    deep_rgb = read_image(good / "deep.png")
    assert (deep_rgb[:, S // 2:] == 255).all() and (deep_rgb[:, : S // 2] == 128).all()  # scaled, not clipped
    assert read_mask(good / "deep.png").all()
    dataset = AnomalyDataset(split.train, 32, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert {tuple(dataset[i]["image"].shape) for i in range(len(dataset))} == {(3, 32, 32)}


def test_mixed_image_sizes_are_resized_with_a_note(tmp_path):
    root = _folder_dataset(tmp_path)
    odd = _image(tmp_path / "widget" / "train" / "good" / "wide.png", size=(40, 24))
    with pytest.warns(DatasetWarning) as record:
        split = load_split(root, "widget")
    message = str(record[0].message)
    assert "2 sizes" in message and "40x24: 1 image(s)" in message and str(odd) in message
    assert "16x16: 8 image(s)" in message and "resizes" in message
    dataset = AnomalyDataset(split.train + split.test, 32)
    assert {tuple(dataset[i]["image"].shape) for i in range(len(dataset))} == {(3, 32, 32)}


@pytest.mark.parametrize("normal, anomalous", [(3, 0), (0, 3)])
def test_single_class_test_split_gives_nan_not_a_crash(tmp_path, normal, anomalous):
    root = _folder_dataset(tmp_path, normal_test=normal, anomalous_test=anomalous)
    with pytest.warns(DatasetWarning, match=f"only {'normal' if normal else 'anomalous'} images"):
        row = run_benchmark("baseline", root, "widget", preset="smoke", device="cpu")
    assert all(math.isnan(row[k]) for k in ("image_auroc", "image_ap", "image_f1_max"))
    if anomalous:  # normal and anomalous pixels exist: the pixel metrics stay defined
        assert 0.0 <= row["pixel_auroc"] <= 1.0
    assert "n/a" in format_table([row])


# ----------------------------------------------------------------------------------- 2. bad configuration
# (method, impossible size, what the message must say, nearest valid sizes)
SIZE_CASES = {
    "baseline": (12, "at least 16", (16,)),
    "fod": (8, "at least 16", (16,)),
    "thfr": (96, "power of two", (64, 128)),
    "pouta": (72, "multiple of 16", (64, 80)),
    "pouta_vanilla": (80, "multiple of 32", (64, 96)),
    "prn": (80, "multi-size attention", (64, 93)),
}


def test_every_method_has_an_image_size_case():
    assert set(SIZE_CASES) == set(available())


@pytest.mark.parametrize("method", sorted(SIZE_CASES))
def test_image_size_the_method_cannot_take(method, synth_root):
    size, reason, nearest = SIZE_CASES[method]
    with pytest.raises(ConfigError) as exc:
        create(method, "smoke", device="cpu", image_size=size)
    message = str(exc.value)
    assert message.startswith(f"{method}: image_size {size} is not possible") and reason in message
    assert f"Nearest valid sizes: {' or '.join(map(str, nearest))};" in message
    # the sizes it suggests really work: fit and predict at the larger one
    split = load_split(synth_root, "brick")
    model = create(method, "smoke", device="cpu", image_size=nearest[-1], epochs=1)
    model.fit(split.train[:4], anomalies=[s for s in split.test if s.label][:2])
    assert model.predict(next(iter(model.loader(split.test[:2])))).maps.shape == (2, nearest[-1], nearest[-1])


def test_bad_backbone_layers_or_size_value_fail_at_creation():
    with pytest.raises(ConfigError, match="baseline: image_size='big' is not valid: it must be a whole number"):
        create("baseline", "smoke", image_size="big")
    with pytest.raises(ConfigError, match=r"(?s)Unknown backbone 'resnet_nope'.*efficientnet_lite0"):
        create("fod", "smoke", backbone="resnet_nope")
    with pytest.raises(ConfigError, match=r"(?s)no feature level\(s\) \[9\].*4: blocks.6 \(320 ch, /32\)"):
        create("thfr", "smoke", layers=(2, 9))


@pytest.mark.parametrize("method, key, valid", [("fod", "scoring", "'rec', 'div', 'rec_div'"), ("fod", "reference", "'mean', 'coreset'"),
                                                ("prn", "msa_embedding", "'pointwise', 'patch'"), ("prn", "msa_scale", "'dim', 'sqrt_dim'"),
                                                ("thfr", "template_align", "'conv', 'pooled'")])
def test_a_text_option_outside_its_choices_is_one_line_naming_them(method, key, valid):
    with pytest.raises(ConfigError, match=f"^{method}: {key}='nope' is not valid: it must be one of {valid} "
                                          rf"\(e\.g\. --set {key}=\"[a-z_]+\"\)\.$"):
        get_config(method, "cpu", **{key: "nope"})


# ------------------------------------------------------------------------------------- 3. training faults
def _regression(loss_hook=None):
    """``(model, loss_fn, loader, optimizer)`` of a tiny linear regression (4 steps per epoch);
    ``loss_hook(step, loss)`` may replace the loss of a step (counted from 1 per call of fit)."""
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    step = {"n": 0}

    def loss_fn(batch):
        step["n"] += 1
        loss = nn.functional.mse_loss(model(batch[0])[:, 0], batch[1])
        return loss_hook(step["n"], loss) if loss_hook else loss

    return model, loss_fn, loader, torch.optim.SGD(model.parameters(), lr=0.05)


def _fit(parts, epochs: int, checkpoint: Path | None = None):
    model, loss_fn, loader, optimizer = parts
    return fit(model, loss_fn, loader, optimizer, epochs, torch.device("cpu"), checkpoint=checkpoint,
               show_progress=False)


def test_nan_loss_restores_the_last_checkpoint(tmp_path):
    ckpt = tmp_path / "run.pt"
    _fit(_regression(), 2, ckpt)
    saved = load_checkpoint(ckpt)["model"]
    # resumed for epochs 3-4: two steps move the weights, then the loss diverges
    parts = _regression(lambda step, loss: loss * float("inf") if step == 3 else loss)
    with pytest.raises(TrainingError) as exc:
        _fit(parts, 4, ckpt)
    message = str(exc.value)
    assert "loss became inf at epoch 3, step 11; last finite loss" in message
    assert f"restored from the last checkpoint {ckpt} (2 epochs)" in message and "Lower the learning rate" in message
    torch.testing.assert_close(parts[0].state_dict(), saved)  # the weights in memory are the checkpoint's


def test_resuming_from_a_checkpoint_of_another_model(tmp_path):
    ckpt = tmp_path / "run.pt"
    _fit(_regression(), 1, ckpt)
    _, loss_fn, loader, _ = _regression()
    wider = nn.Linear(4, 2)
    with pytest.raises(CheckpointError) as exc:
        fit(wider, loss_fn, loader, torch.optim.SGD(wider.parameters(), lr=0.1), 2, torch.device("cpu"),
            checkpoint=ckpt, show_progress=False)
    assert str(ckpt) in str(exc.value) and "does not fit this model" in str(exc.value)
    assert "delete it or train without resuming" in str(exc.value)


def test_out_of_memory_names_the_batch_size_and_what_to_lower(tmp_path):
    def oom(step, loss):
        if step == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return loss

    with pytest.raises(DeviceMemoryError) as exc:
        _fit(_regression(oom), 1)
    message = str(exc.value)
    assert "epoch 1, step 2" in message and "a batch of 8 images" in message and "batch_size=4" in message
    assert exc.value.__context__ is None  # the OOM traceback (holding the activations) was let go


def test_out_of_memory_during_prediction(synth_root, monkeypatch):
    split = load_split(synth_root, "brick")
    model = create("baseline", "smoke", device="cpu").fit(split.train[:2])

    def oom(batch):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory.")

    monkeypatch.setattr(model, "predict", oom)
    with pytest.raises(DeviceMemoryError, match=r"baseline predict: out of memory on cpu with a batch of 8 images"):
        model.predict_all(split.test)


@pytest.mark.parametrize("method", trained_methods())
def test_interrupted_and_resumed_fit_matches_an_uninterrupted_one(method, synth_root, tmp_path, monkeypatch):
    check_resume_matches_uninterrupted(method, synth_root, tmp_path, monkeypatch)


def test_sigterm_keeps_the_checkpoint_and_resume_continues(synth_root, tmp_path, capsys):
    out = tmp_path / "fod.pt"
    args = ["train", "--method", "fod", "--preset", "smoke", "--data", str(synth_root), "--category", "brick",
            "--device", "cpu", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NBHELPERS_PROGRESS": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "nbhelpers.cli", *args, "--set", "epochs=10000"], env=env,
                            stderr=subprocess.PIPE, text=True)
    ckpt = tmp_path / "fod.train" / "fod.pt"
    deadline = time.monotonic() + 240
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)  # now mostly inside an epoch or writing the next checkpoint
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in err, err
    assert [p.name for p in ckpt.parent.iterdir()] == ["fod.pt"]  # no half-written temporary file
    done = load_checkpoint(ckpt)["epoch"] + 1
    assert main([*args, "--set", f"epochs={done + 1}", "--resume"]) == 0
    captured = capsys.readouterr()
    assert f"resumed from {ckpt}: {done} of {done + 1} epochs done" in captured.err
    assert f"saved {out}" in captured.out and not ckpt.parent.exists()
    assert len(create("fod", "smoke", device="cpu", epochs=done + 1).load(out).train_result.losses) == done + 1


# ------------------------------------------------------------------------------------ 4. reproducibility
@pytest.mark.parametrize("method", available())
def test_same_seed_same_scores_for_every_method(method, synth_root):
    check_same_seed_same_scores(method, synth_root)


# ------------------------------------------------------------------------------------------ 5. batch runs
def test_bench_reports_a_crashing_method_and_runs_the_others(synth_root, tmp_path, monkeypatch, capsys):
    real_fit = Baseline.fit

    def fit_or_crash(self, train, *args, **kwargs):
        if train[0].category == "grass":
            raise RuntimeError("boom on purpose")
        return real_fit(self, train, *args, **kwargs)

    monkeypatch.setattr(Baseline, "fit", fit_or_crash)
    code = main(["bench", "--method", "baseline", "--data", str(synth_root), "--category", "grass,brick",
                 "--preset", "smoke", "--device", "cpu", "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 1
    assert "1/2 runs ok" in captured.out
    assert "FAILED baseline/grass: RuntimeError: boom on purpose (in fit_or_crash, " in captured.out
    assert "Traceback" in captured.err  # the full traceback of an unexpected error goes to stderr
    assert [r["category"] for r in json.loads((tmp_path / "results.json").read_text())] == ["brick"]


def test_bench_stops_on_ctrl_c(synth_root, tmp_path, monkeypatch, capsys):
    calls = []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(Baseline, "fit", interrupted)
    code = main(["bench", "--method", "baseline", "--data", str(synth_root), "--category", "grass,brick",
                 "--preset", "smoke", "--device", "cpu", "--out", str(tmp_path)])
    assert code == 130 and len(calls) == 1  # not swallowed: the second category never starts
    assert "interrupted" in capsys.readouterr().err


# ------------------------------------------------------------------------------ 6. checkpoints are data
class _Payload:
    """Unpickling this runs code: it would create the file ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_loading_refuses_files_that_are_not_ours(tmp_path):
    model = create("fod", "smoke", device="cpu")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"format": "nbhelpers-checkpoint-v1", "method": "fod", "x": _Payload(marker)}, protocol=2))
    torch.save({"format": "nbhelpers-checkpoint-v1", "method": "fod", "x": _Payload(marker)}, tmp_path / "evil2.pt")
    assert not marker.exists()
    for path in (junk, evil, tmp_path / "evil2.pt"):
        with pytest.raises(CheckpointError) as exc:
            model.load(path)
        assert str(path) in str(exc.value) and "Only files written by nbhelpers' save() are loaded" in str(exc.value)
    assert not marker.exists()  # nothing was executed


def test_checkpoint_of_another_configuration_names_the_differences(tmp_path):
    path = create("fod", "smoke", device="cpu").save(tmp_path / "fod.pt")
    with pytest.raises(CheckpointError) as exc:
        create("fod", "smoke", device="cpu", d_model=(16, 16)).load(path)
    assert str(path) in str(exc.value) and "d_model=(32, 32) (this model: (16, 16))" in str(exc.value)
    with pytest.raises(CheckpointError, match="method='fod', expected 'thfr'"):
        create("thfr", "smoke", device="cpu").load(path)
