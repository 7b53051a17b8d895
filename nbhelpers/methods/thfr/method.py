"""THFR: the method class (template bank, restoration training, inference, persistence)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from nbhelpers.backbones import FeatureExtractor
from nbhelpers.data.records import Sample
from nbhelpers.data.torchdata import make_loader
from nbhelpers.distributed import computed_once
from nbhelpers.errors import ConfigError
from nbhelpers.maps import max_score
from nbhelpers.methods.base import AnomalyMethod, AnomalyResult, Paper, SizeRule, micro_batched, register
from nbhelpers.methods.thfr.config import Config, by_layout
from nbhelpers.methods.thfr.loss import anomaly_map, restoration_loss
from nbhelpers.methods.thfr.modules import FeatureVisualizer, THFRNet
from nbhelpers.methods.thfr.template_bank import TemplateBank, draw_template
from nbhelpers.progress import progress
from nbhelpers import train as training
from nbhelpers.train import TrainResult, autocast, to_device


class _Indices(Dataset):
    """Bank indices ``0..n-1`` (training runs on the cached backbone features of the bank)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return index


@register
class THFR(AnomalyMethod):
    """Template-guided hierarchical feature restoration.

    ``fit`` fills the template bank with the training images' features (the backbone runs once),
    trains :class:`THFRNet` on them with Eq. 3, then subsamples the bank for inference;
    ``predict`` retrieves each image's template by image-level NNS and scores the cosine distance
    to the restored features. ``fit_visualizer`` trains the optional :class:`FeatureVisualizer`.
    """

    name = "thfr"
    paper = Paper("Guo et al., Template-guided Hierarchical Feature Restoration for Anomaly Detection, ICCV 2023",
                  "THFR")
    config_class = Config
    size_rule = SizeRule(multiple=2, per_stride=True, power_of_two=True,
                         why="the global bottleneck deconvolves a 1 x 1 code to the grid image_size / "
                             "(2 x deepest stride) in 2 x 2 steps")

    def __init__(self, config: Config | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        self.backbone = FeatureExtractor(cfg.backbone, cfg.layers, cfg.weights).to(self.device)
        self.net = THFRNet(self.backbone.channels, self.backbone.reductions, cfg.image_size, cfg).to(self.device)
        self.visualizer: FeatureVisualizer | None = None  # built by fit_visualizer / load (not part of the detector)
        self.bank: TemplateBank | None = None
        self._candidates: torch.Tensor | None = None  # long[N, n]: the Eq. 1 candidates of each bank entry
        self._generator = torch.Generator(device=self.device)  # draws the template among them
        self.visualizer_result = TrainResult()  # losses of fit_visualizer
        self.n_candidates: int | None = None  # Eq. 1's n and the map's sigma, set by fit from the layout
        self.sigma: float | None = None

    # ----- features ---------------------------------------------------------------------------
    @torch.no_grad()
    def extract(self, samples: Sequence[Sample], desc: str = "thfr features") -> tuple[list[torch.Tensor], torch.Tensor]:
        """Backbone levels of ``samples`` on the device: ``([float[N,C_k,H_k,W_k]], float[N,3,H,W] images)``."""
        feats: list[list[torch.Tensor]] = []
        images = []
        for batch in progress(self.loader(samples), desc=desc, enabled=self.config.progress):
            x = to_device(batch["image"], self.device)
            feats.append(self.backbone(x))
            images.append(x)
        return [torch.cat(level) for level in zip(*feats)], torch.cat(images)

    def build_bank(self, samples: Sequence[Sample]) -> TemplateBank:
        """The full template bank of the normal ``samples`` (one backbone pass). Paths are stored
        absolute, so a checkpoint saved by ``nbhelpers bench`` in the repository root still shows its
        templates when a notebook loads it from ``notebooks/``."""
        features, _ = self.extract(samples, desc="thfr template bank")
        return TemplateBank(features, [str(Path(s.image).resolve()) for s in samples])

    # ----- training ---------------------------------------------------------------------------
    def _index_loader(self, n: int):
        return make_loader(_Indices(n), self.config.batch_size, shuffle=True, seed=self.config.seed)

    def on_fit_start(self, train: Sequence[Sample], val: Sequence[Sample] | None,
                     anomalies: Sequence[Sample] | None) -> None:
        """Build the bank of ``train`` and the Eq. 1 candidates: the ``n`` nearest *other* training images,
        with ``n`` and the map's ``sigma`` following the training images' layout (:func:`by_layout`)."""
        cfg = self.config
        if len(train) < 2 and cfg.use_template:
            raise ConfigError("THFR needs at least 2 training images (a template must differ from its input).")
        self.n_candidates, self.sigma = by_layout(cfg, train[0].layout)
        self.bank = computed_once(lambda: self.build_bank(train), self.device)
        self._candidates = self.bank.candidates(self.n_candidates) if cfg.use_template else None
        self._generator.manual_seed(cfg.seed)

    def training_step(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """Eq. 3 for bank entries ``index: long[B]``, each restored with a template drawn by Eq. 1."""
        bank, candidates = self.bank, self._candidates
        features = bank.gather(index)
        template = bank.gather(draw_template(candidates[index], self._generator)) if candidates is not None else None
        return {"loss": restoration_loss(features, self.net(features, template))}

    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, None]:
        return torch.optim.Adam(self.net.parameters(), lr=self.config.lr, betas=self.config.adam_betas), None

    def train_loader(self, train: Sequence[Sample], anomalies: Sequence[Sample] | None):
        """Indices into the bank: the backbone ran once in :meth:`on_fit_start`."""
        return self._index_loader(len(self.bank))

    @property
    def generators(self) -> tuple[torch.Generator, ...]:
        return (self._generator,)

    def on_fit_end(self, train: Sequence[Sample]) -> None:
        """Subsample the bank for inference (``bank_ratio``)."""
        cfg = self.config
        self.bank = self.bank.subsample(cfg.bank_ratio, cfg.projection_dim, cfg.seed)

    def fit_visualizer(self, train: Sequence[Sample], epochs: int | None = None) -> THFR:
        """Train the :class:`FeatureVisualizer` with MSE (supp. §1.1) to turn pre-trained features of
        ``train`` images back into the (normalised) images."""
        cfg = self.config
        features, images = self.extract(train, desc="thfr visualizer data")
        self.visualizer = self._new_visualizer()

        def loss_fn(index: torch.Tensor) -> torch.Tensor:
            return F.mse_loss(self.visualizer([f[index] for f in features]).float(), images[index])

        optimizer = torch.optim.Adam(self.visualizer.parameters(), lr=cfg.vis_lr)
        self.visualizer_result = training.fit(self.visualizer, loss_fn, self._index_loader(len(images)), optimizer,
                                              cfg.vis_epochs if epochs is None else epochs, self.device,
                                              show_progress=cfg.progress, desc="thfr visualizer", seed=cfg.seed)
        self.visualizer.eval()
        return self

    def _new_visualizer(self) -> FeatureVisualizer:
        return FeatureVisualizer(self.backbone.channels, self.backbone.reductions, self.config.vis_width).to(self.device)

    # ----- inference --------------------------------------------------------------------------
    def _require_bank(self) -> TemplateBank:
        if self.bank is None:
            raise ConfigError("THFR has no template bank yet: call fit() or load() first.")
        return self.bank

    @torch.no_grad()
    def restore(self, images: torch.Tensor) -> dict[str, Any]:
        """Features, retrieved template and restored features of normalised ``images: float[B,3,H,W]``.

        Returns ``{"features": [float[B,C_k,H_k,W_k]], "restored": [...same], "template": [...same] or
        None, "template_index": long[B], "template_similarity": float[B]}`` (index into :attr:`bank`).
        """
        bank = self._require_bank()
        self.net.eval()
        features = self.backbone(images.to(self.device))
        index, similarity = bank.search(features[-1], 1)
        template = bank.gather(index[:, 0]) if self.config.use_template else None
        with autocast(self.device):
            restored = self.net(features, template)
        return {"features": features, "restored": [r.float() for r in restored], "template": template,
                "template_index": index[:, 0], "template_similarity": similarity[:, 0]}

    @micro_batched
    @torch.no_grad()
    def predict(self, batch: dict) -> AnomalyResult:
        """Anomaly maps (Eq. 5, smoothed) and image scores (map maximum) of a batch.

        Inference retrieves one template per image (n = 1, §3.2) and smooths with the ``sigma`` fit chose.
        ``extras``: ``template_index`` (long[B]), ``template_similarity`` (float[B]), ``template_path``
        (list[str]) and ``level_maps`` (per level ``float[B,H_k,W_k]``, Eq. 4).
        """
        images = to_device(batch["image"], self.device)
        out = self.restore(images)
        maps, levels = anomaly_map(out["features"], out["restored"], images.shape[-2:], self.sigma)
        paths = self._require_bank().paths
        return AnomalyResult(scores=max_score(maps), maps=maps, extras={
            "template_index": out["template_index"], "template_similarity": out["template_similarity"],
            "template_path": [paths[i] for i in out["template_index"].tolist()], "level_maps": levels})

    @torch.no_grad()
    def visualize(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Pictures ``float[B,3,H,W]`` (backbone-normalised) of a feature hierarchy (pre-trained or restored)."""
        if self.visualizer is None:
            raise ConfigError("The feature visualiser is not trained: call fit_visualizer(train) first.")
        self.visualizer.eval()
        with autocast(self.device):
            return self.visualizer([f.to(self.device) for f in features]).float()

    # ----- persistence ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        bank = self._require_bank()
        state: dict[str, Any] = {"net": self.net.state_dict(), "bank_features": [f.cpu() for f in bank.features],
                                 "bank_paths": list(bank.paths), "n_candidates": self.n_candidates,
                                 "sigma": self.sigma, "visualizer_result": asdict(self.visualizer_result)}
        if self.visualizer is not None:
            state["visualizer"] = self.visualizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.net.eval()
        self.bank = TemplateBank([f.to(self.device) for f in state["bank_features"]], list(state["bank_paths"]))
        self.n_candidates, self.sigma = state["n_candidates"], state["sigma"]
        self.visualizer_result = TrainResult(**state.get("visualizer_result", {}))
        self.visualizer = None
        if "visualizer" in state:
            self.visualizer = self._new_visualizer()
            self.visualizer.load_state_dict(state["visualizer"])
            self.visualizer.eval()
