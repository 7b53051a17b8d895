"""Every method has the same shape: one training loop in the base class, one config source per preset,
and a new method plugs into the registry and `nbhelpers bench` from its own file."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from nbhelpers.cli import main
from nbhelpers.data.layouts import load_split
from nbhelpers.errors import DatasetError
from nbhelpers.maps import max_score, upsample
from nbhelpers.methods import available, create, get, get_config
from nbhelpers import papermap
from nbhelpers.methods.base import _REGISTRY, AnomalyMethod, AnomalyResult, MethodConfig, Paper, register
from nbhelpers.train import to_device

from method_checks import check_resume_matches_uninterrupted, check_same_seed_same_scores, trained_methods

REFERENCE = Path(__file__).parent / "data" / "method_configs_reference.json"


def test_every_preset_resolves_to_the_reference_config():
    """The configs of every method x preset as saved before the one-shape refactoring (THFR's as
    changed on purpose by issue 19: n and sigma by layout, per-branch template alignment, torchvision
    weights in ``paper``, the global bottleneck only in ``smoke`` and ``cpu``; POUTA's by issue 20:
    I_aug, few-shot, the cpu regime and the paper's discriminative widths in ``paper``; FOD's by issue 22:
    the official layer (residuals cancel), the paper's tf_efficientnet_b6 weights and official levels in ``paper``,
    the cpu preset at 256 px on levels (3, 4) for 30 epochs; PRN's by issue 21: 35 epochs in cpu): a refactoring
    that lets a default leak into a preset (or changes one) fails here."""
    reference = json.loads(REFERENCE.read_text())
    now = {m: {p: json.loads(json.dumps(get_config(m, p).to_dict(), default=list)) for p in ("smoke", "cpu", "paper")}
           for m in available()}
    assert now == reference


@pytest.mark.parametrize("name", ["baseline", "thfr", "pouta", "pouta_vanilla", "prn", "fod"])
def test_one_source_of_defaults(name):
    """The dataclass defaults are the cpu preset; presets hold only their differences from it."""
    cls = get(name).config_class
    assert cls() == cls.from_preset("cpu") and cls.PRESETS["cpu"] == {}
    defaults = cls().to_dict()
    for preset in ("smoke", "paper"):
        assert all(defaults[k] != (list(v) if isinstance(v, tuple) else v) and defaults[k] != v
                   for k, v in cls.PRESETS[preset].items()), preset


def smoke_model(name):
    """The smoke-preset model without hub weights (POUTA's vanilla network has no backbone to load)."""
    return create(name, "smoke", device="cpu", weights=None) if name != "pouta_vanilla" else create(name, "smoke", device="cpu")


@pytest.mark.parametrize("name", ["baseline", "thfr", "pouta", "pouta_vanilla", "prn", "fod"])
def test_fit_without_training_images_is_one_clear_error(name):
    model = smoke_model(name)
    with pytest.raises(DatasetError, match=rf"{name}\.fit: no normal training images"):
        model.fit([])
    assert model.fitted_on == {}  # nothing recorded as learned


@pytest.mark.parametrize("name", ["baseline", "thfr", "pouta", "pouta_vanilla", "prn", "fod"])
def test_large_cpu_batches_run_as_micro_batches_with_the_same_results(name, synth_root):
    """``predict`` on more than ``batch_size`` images (CPU) equals one undivided pass, extras included
    (FOD's attention maps and its batch-independent reference positions too)."""
    split = load_split(synth_root, "brick")
    model = create(name, "smoke", device="cpu", epochs=1).fit(split.train, anomalies=[s for s in split.test if s.label][:2])
    assert getattr(type(model).predict, "micro_batched", False)
    n = 2 * model.config.batch_size + 1
    batch = next(iter(model.loader(split.test[:n], batch_size=n)))
    kwargs = {"return_attention": True} if name == "fod" else {}
    split_run, whole = model.predict(batch, **kwargs), type(model).predict.__wrapped__(model, batch, **kwargs)
    torch.testing.assert_close(split_run.scores, whole.scores, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(split_run.maps, whole.maps, rtol=1e-5, atol=1e-6)
    flat = [torch.utils._pytree.tree_flatten(r.extras) for r in (split_run, whole)]
    assert flat[0][1] == flat[1][1]  # the same structure
    for a, b in zip(flat[0][0], flat[1][0]):
        if isinstance(a, torch.Tensor):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["baseline", "thfr", "pouta", "pouta_vanilla", "prn", "fod"])
def test_methods_declare_steps_and_inherit_the_training_loop(name):
    cls = get(name)
    assert cls.fit is AnomalyMethod.fit, f"{name} must not write its own training loop"
    model = smoke_model(name)
    if name == "baseline":
        assert model.net is None  # nothing trained by gradient
    else:
        assert isinstance(model.net, torch.nn.Module) and type(model).training_step is not AnomalyMethod.training_step


@dataclass
class TinyConfig(MethodConfig):
    """A fifth method for this test: a 1x1 convolution that learns to reproduce the image."""

    width: int = 4
    epochs: int = 2
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": dict(image_size=32, batch_size=4, progress=False), "cpu": dict(image_size=32), "paper": {}}


class Tiny(AnomalyMethod):
    """A tiny autoencoder: the squared reconstruction error is the anomaly map (Eq. 1 of its paper)."""

    name = "tiny_test_method"
    paper = Paper("A tiny paper on reconstruction, 2026", "TINY")
    config_class = TinyConfig
    modules = ("net",)

    def __init__(self, config: TinyConfig | None = None) -> None:
        super().__init__(config)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, self.config.width, 1), torch.nn.Conv2d(self.config.width, 3, 1))
        self.started = self.ended = 0

    def on_fit_start(self, train, val, anomalies) -> None:
        self.started += 1

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """Eq. 2: the mean squared reconstruction error of the batch."""
        rec = (self.net(batch["image"]) - batch["image"]).pow(2).mean()
        return {"loss": rec, "rec": rec}

    def on_fit_end(self, train) -> None:
        self.ended += 1

    @torch.no_grad()
    def predict(self, batch: dict) -> AnomalyResult:
        images = to_device(batch["image"], self.device)
        maps = upsample((self.net(images) - images).pow(2).mean(1), images.shape[-2:])
        return AnomalyResult(scores=max_score(maps), maps=maps)


@pytest.fixture
def tiny():
    register(Tiny)
    yield Tiny
    _REGISTRY.pop(Tiny.name)


def test_a_fifth_method_runs_through_the_base_loop_and_bench(tiny, synth_root, tmp_path, capsys):
    from nbhelpers.data.layouts import load_split

    model = create(tiny.name, "smoke", device="cpu")
    split = load_split(synth_root, "grass")
    model.fit(split.train)
    assert (model.started, model.ended) == (1, 1)
    result = model.train_result
    assert len(result.losses) == 2 and set(result.terms[0]) == {"loss", "rec"} and result.steps == 2 * 2
    path = model.save(tmp_path / "tiny.pt")
    again = create(tiny.name, "smoke", device="cpu").load(path)
    assert again.train_result.losses == result.losses  # saved with the checkpoint
    assert tiny.name in available()
    code = main(["bench", "--method", tiny.name, "--data", str(synth_root), "--category", "grass,nuts",
                 "--preset", "smoke", "--out", str(tmp_path / "bench")])
    out = capsys.readouterr().out
    assert code == 0 and "2/2 runs ok" in out and "Image AUROC logical" in out


def test_a_fifth_method_gets_a_paper_map_and_passes_the_reliability_checks(tiny, synth_root, tmp_path, monkeypatch):
    assert tiny.name in papermap.papers() and tiny.name in trained_methods()
    entries = papermap.paper_map(tiny.name)
    assert {e.reference for e in entries} == {"Eq. 1", "Eq. 2"} and papermap.verify(entries) == []
    assert entries[0].path == "tests/test_one_shape.py"
    check_same_seed_same_scores(tiny.name, synth_root)
    check_resume_matches_uninterrupted(tiny.name, synth_root, tmp_path, monkeypatch)
