"""The method contract every anomaly-detection method of the collection implements.

A method module defines a ``Config`` dataclass (presets ``smoke``, ``cpu``, ``paper``) and a class
derived from :class:`AnomalyMethod` registered under a name::

    method = get("baseline")(get_config("baseline", "cpu"))
    method.fit(split.train)                      # list of Sample records
    for batch in method.loader(split.test):      # the method's own transform
        result = method.predict(batch)           # AnomalyResult(scores[B], maps[B,H,W], extras)
    method.save("model.pt"); method.load("model.pt")

Each method class declares the input sizes it can take in ``size_rule`` (a :class:`SizeRule`); a
method created with another ``image_size`` raises a :class:`~nbhelpers.errors.ConfigError` naming
the nearest valid sizes before anything is built.
"""
from __future__ import annotations

import dataclasses
import functools
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.utils.data import DataLoader

from nbhelpers import distributed, get_device, seed_everything
from nbhelpers.backbones import level_strides
from nbhelpers.data.records import Sample
from nbhelpers.data.torchdata import AnomalyDataset, make_loader
from nbhelpers.errors import ConfigError, DatasetError
from nbhelpers.methods.fields import Range, check_fields
from nbhelpers.progress import progress
from nbhelpers.provenance import config_differences, data_fingerprint
from nbhelpers import train as training
from nbhelpers.train import (CheckpointError, TrainResult, checkpointing, load_checkpoint, reporting_out_of_memory,
                             save_checkpoint)

PRESET_NAMES = ("smoke", "cpu", "paper")


@dataclass
class MethodConfig:
    """Settings shared by every method; method modules subclass it and fill ``PRESETS``.

    One source of defaults: a method's dataclass defaults *are* its ``cpu`` preset (the teaching
    default), and ``PRESETS`` lists only how ``smoke`` (CI) and ``paper`` (the paper's settings, for a
    GPU) differ from them, so ``Config()`` equals ``Config.from_preset("cpu")``.

    Attributes:
        backbone, layers, weights: the pre-trained feature extractor (see ``nbhelpers.backbones``).
        image_size: square input side in pixels. batch_size, epochs, lr: training.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``. seed: everything random is seeded from it.
        num_workers: DataLoader workers (0-2 on small machines). progress: show progress bars.
    """

    backbone: str = "efficientnet_lite0"
    weights: str | None = "packaged"
    layers: tuple[int, ...] = (2, 3)
    image_size: int = 256
    batch_size: int = 8
    epochs: int = 1
    lr: float = 1e-3
    device: str = "auto"
    seed: int = 0
    num_workers: int = 0
    progress: bool = True

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"smoke": {}, "cpu": {}, "paper": {}}
    #: allowed numbers per field (subclasses add theirs); any other number must be >= 0 (``fields``)
    RANGES: ClassVar[dict[str, Range]] = {"image_size": Range(1), "batch_size": Range(1), "epochs": Range(1),
                                          "lr": Range(0, open_low=True)}

    def __post_init__(self) -> None:
        """Type- and range-check every field (:func:`nbhelpers.methods.fields.check_fields`)."""
        check_fields(self)

    @classmethod
    def from_preset(cls, name: str = "cpu", **overrides: Any) -> MethodConfig:
        """The config of preset ``name`` with ``overrides`` applied.

        Raises:
            ConfigError: unknown preset or unknown field name (the valid ones are listed), or a value of
                the wrong type or out of range (the key, the value and what is allowed).
        """
        if name not in cls.PRESETS:
            raise ConfigError(f"Unknown preset {name!r}; valid presets: {sorted(cls.PRESETS)}.")
        values = {**cls.PRESETS[name], **overrides}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"Unknown {cls.__module__}.{cls.__qualname__} field(s) {unknown}; valid: {sorted(names)}.")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SizeRule:
    """The square input sides (``config.image_size``) a method can take.

    With ``unit = multiple`` pixels, times the deepest stride of ``config.layers`` when
    ``per_stride``, a side is valid when it is a multiple of ``unit``, at least ``unit``, at least the
    deepest backbone stride for methods that run a ``backbone`` (one feature per level), and, with
    ``power_of_two``, when side / unit is a power of two. ``why`` names the part of the method that
    needs it (quoted in the error). A rule these fields cannot express subclasses it and extends
    :meth:`problem` (see PRN's ``MSASizeRule``).
    """

    multiple: int = 1
    per_stride: bool = False
    power_of_two: bool = False
    backbone: bool = True
    why: str = ""

    def problem(self, side: int, strides: Sequence[int], config: MethodConfig) -> str | None:
        """Why ``side`` is not possible (``None`` when it is); ``strides``: those of ``config.layers``."""
        unit = self.multiple * (max(strides) if self.per_stride else 1)
        low = max(unit, max(strides) if self.backbone else 1)
        because = f" ({self.why})" if self.why else ""
        if side < low:
            deepest = f", the deepest backbone stride of layers {tuple(config.layers)}" if low > unit else ""
            return f"it must be at least {low}{deepest}{because}"
        if side % unit:
            return f"it must be a multiple of {unit}{because}"
        if self.power_of_two and (side // unit) & (side // unit - 1):
            return f"image_size / {unit} = {side // unit} must be a power of two{because}"
        return None

    def check(self, method: str, config: MethodConfig) -> None:
        """Raise :class:`ConfigError` naming ``method``, the size and the nearest valid sizes when
        ``config.image_size`` is not possible (also for an unknown backbone or level)."""
        side = config.image_size  # a whole number >= 1: checked when the config was built
        strides = level_strides(config.backbone, config.layers) if self.backbone else []
        reason = self.problem(side, strides, config)
        if reason is None:
            return
        below = next((s for s in range(side - 1, 0, -1) if self.problem(s, strides, config) is None), None)
        above = next(s for s in range(side + 1, 64 * side) if self.problem(s, strides, config) is None)
        near = " or ".join(str(s) for s in (below, above) if s is not None)
        raise ConfigError(f"{method}: image_size {side} is not possible: {reason}. Nearest valid sizes: {near}; "
                          f"set image_size to one of them (e.g. --set image_size={above}).")


@dataclass(frozen=True)
class Paper:
    """The paper a method implements, declared on the method class (``paper = Paper(...)``).

    Attributes:
        title: as cited in the notebooks.
        tag: the paper's short name (``"THFR"``).
        shared: modules shared with other papers (e.g. ``nbhelpers.data.anomalies``) whose objects
            belong to this paper's map when their docstring names ``tag`` as a word.

    :mod:`nbhelpers.papermap` scans the docstrings of the class's module (a method package: all its
    modules) for the equations, figures, tables and sections they cite.
    """

    title: str
    tag: str
    shared: tuple[str, ...] = ()


@dataclass
class AnomalyResult:
    """Output of ``predict`` for one batch.

    Attributes:
        scores: ``float[B]`` image anomaly scores (higher = more anomalous; raw, no sigmoid).
        maps: ``float[B,H,W]`` pixel anomaly maps at the input resolution.
        extras: what notebooks visualise (templates, attention maps, embeddings, ...).
    """

    scores: torch.Tensor
    maps: torch.Tensor
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def concat(cls, parts: Sequence[AnomalyResult], sizes: Sequence[int]) -> AnomalyResult:
        """One result from the results of consecutive micro-batches of ``sizes`` images: every tensor
        whose first axis is its part's batch (in extras too, inside lists and dicts) and every list of
        one plain value per image is concatenated; lists of tensors (e.g. one per level) are merged item
        by item; anything else (e.g. FOD's reference positions) is the same in every part and kept once."""
        def merge(values: list[Any]) -> Any:
            first = values[0]
            if isinstance(first, torch.Tensor):
                batched = all(v.dim() > 0 and v.shape[0] == n for v, n in zip(values, sizes))
                return torch.cat(values) if batched else first
            if isinstance(first, dict):
                return {k: merge([v[k] for v in values]) for k in first}
            if isinstance(first, (list, tuple)):
                per_image = all(len(v) == n for v, n in zip(values, sizes)) and not any(
                    isinstance(x, (torch.Tensor, dict, list, tuple)) for x in first)
                if per_image:  # e.g. THFR's template paths: one plain value per image
                    return type(first)(x for v in values for x in v)
                return type(first)(merge(list(v)) for v in zip(*values))
            return first

        return cls(scores=torch.cat([p.scores for p in parts]), maps=torch.cat([p.maps for p in parts]),
                   extras=merge([p.extras for p in parts]))


def micro_batched(predict: Callable[..., AnomalyResult]) -> Callable[..., AnomalyResult]:
    """Decorator of every method's ``predict``: on a CPU a batch of more than ``config.batch_size``
    images runs as consecutive micro-batches of ``config.batch_size`` (the batches the evaluation
    loader gives, so the same numbers), joined by :meth:`AnomalyResult.concat`.

    Memory-bound layers (depthwise and full-resolution convolutions, attention maps) slow down per
    image once a batch's activations outgrow the cache: POUTA at 128 px ran 51 images/s at batch 1 and
    24 at batch 128 in one piece (2 CPU cores). On a GPU the whole batch runs at once.
    """
    @functools.wraps(predict)
    def run(self: AnomalyMethod, batch: dict, *args: Any, **kwargs: Any) -> AnomalyResult:
        n, size = len(batch["image"]), self.config.batch_size
        if self.device.type != "cpu" or n <= size:
            return predict(self, batch, *args, **kwargs)
        starts = range(0, n, size)
        parts = [{k: v[i:i + size] if isinstance(v, (torch.Tensor, list, tuple)) and len(v) == n else v
                  for k, v in batch.items()} for i in starts]
        return AnomalyResult.concat([predict(self, part, *args, **kwargs) for part in parts],
                                    [min(size, n - i) for i in starts])

    run.micro_batched = True
    return run


class AnomalyMethod:
    """Base class: the one training loop, device, loaders, batched inference and checkpointing.

    A method subclasses it, sets ``name``, ``config_class`` and, unless any side from the backbone's
    deepest stride on works, ``size_rule``, builds its trainable module as ``self.net`` (``None``
    for methods that learn nothing by gradient, like the baseline) and declares only what is its own:

    * :meth:`on_fit_start` — what training needs first (banks, prototypes, reference features);
    * :meth:`training_step` — one batch to a dict of named loss terms (``"loss"`` is minimised);
    * :meth:`configure_optimizers` and :meth:`train_loader` — when Adam on ``config.lr`` over
      ``self.net`` and ``loader(train, shuffle=True)`` are not the paper's;
    * :meth:`on_fit_end` — what follows training (e.g. subsampling a bank);
    * :meth:`predict` (decorated with :func:`micro_batched`), and in :meth:`state_dict` /
      :meth:`load_state_dict` what :meth:`save` must keep beyond the ``nn.Module`` attributes listed
      in ``modules``.

    :meth:`fit` runs them in that order around :func:`nbhelpers.train.fit` and keeps the losses in
    :attr:`train_result` (saved in checkpoints). See ``docs/ADDING_A_METHOD.md``.

    Raises (on creation):
        ConfigError: ``config.image_size`` breaks ``size_rule``, or an unknown backbone or level.
    """

    name: ClassVar[str] = "method"
    paper: ClassVar[Paper | None] = None  # the paper implemented (its map is built from the docstrings)
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    modules: ClassVar[tuple[str, ...]] = ()
    size_rule: ClassVar[SizeRule] = SizeRule()

    def __init__(self, config: MethodConfig | None = None) -> None:
        self.config = config or self.config_class.from_preset("cpu")
        self.size_rule.check(self.name, self.config)
        self.device = get_device(self.config.device)
        seed_everything(self.config.seed)
        self.net: torch.nn.Module | None = None
        self.train_result = TrainResult()
        self.fitted_on: dict[str, Any] = {}

    @property
    def seen_anomalies(self) -> int:
        """How many real anomalous samples ``fit`` wants (0 for unsupervised methods)."""
        return int(getattr(self.config, "seen_anomalies", 0))

    def parameter_count(self) -> dict[str, int]:
        """``{"trainable": n, "total": n}`` parameters over every ``nn.Module`` attribute (frozen backbone in total)."""
        seen: dict[int, torch.nn.Parameter] = {}
        for value in vars(self).values():
            if isinstance(value, torch.nn.Module):
                seen.update({id(p): p for p in value.parameters()})
        return {"trainable": sum(p.numel() for p in seen.values() if p.requires_grad),
                "total": sum(p.numel() for p in seen.values())}

    # ----- data -------------------------------------------------------------------------------
    @property
    def normalization(self) -> tuple[Sequence[float] | None, Sequence[float] | None]:
        """``(mean, std)`` applied to input images; ``(None, None)`` keeps them in [0,1]."""
        backbone = getattr(self, "backbone", None)
        return (backbone.mean, backbone.std) if backbone is not None else (None, None)

    def dataset(self, samples: Sequence[Sample]) -> AnomalyDataset:
        """The evaluation dataset of this method (its resolution and normalisation)."""
        mean, std = self.normalization
        return AnomalyDataset(samples, self.config.image_size, mean, std)

    def loader(self, samples: Sequence[Sample], shuffle: bool = False, batch_size: int | None = None) -> DataLoader:
        """Batches of ``samples`` in this method's input format (see ``nbhelpers.data.torchdata``)."""
        return make_loader(self.dataset(samples), batch_size or self.config.batch_size, shuffle=shuffle,
                           num_workers=self.config.num_workers, seed=self.config.seed)

    # ----- training ---------------------------------------------------------------------------
    def fit(self, train: Sequence[Sample], val: Sequence[Sample] | None = None,
            anomalies: Sequence[Sample] | None = None) -> AnomalyMethod:
        """Learn from normal ``train`` images (``val``: optional normal validation images;
        ``anomalies``: a few *seen* anomalous samples for methods that use them, e.g. PRN — they must
        be excluded from evaluation, see ``nbhelpers.benchmark.hold_out_anomalies``).

        The one training loop: :meth:`on_fit_start`, then (when the method has a ``net``)
        ``config.epochs`` epochs of :meth:`training_step` with :meth:`configure_optimizers` over
        :meth:`train_loader` in :func:`nbhelpers.train.fit` (bf16 autocast on CUDA, checkpoints,
        resume, DDP), then :meth:`on_fit_end`. What it learned from is kept in :attr:`fitted_on`
        (categories, image count, :func:`~nbhelpers.provenance.data_fingerprint`) and saved.
        """
        if not train:
            raise DatasetError(f"{self.name}.fit: no normal training images (train is empty); pass the category's "
                               "train/good samples, e.g. load_split(root, category).train.")
        self.fitted_on = {"categories": sorted({s.category for s in train}), "n_train": len(train),
                          "n_anomalies": len(anomalies or ()), "train_fingerprint": data_fingerprint(train)}
        self.on_fit_start(train, val, anomalies)
        if self.net is not None:
            optimizer, scheduler = self.configure_optimizers()
            self.train_result = training.fit(
                self.net, self.training_step, self.train_loader(train, anomalies), optimizer, self.config.epochs,
                self.device, scheduler=scheduler, show_progress=self.config.progress, desc=self.name,
                seed=self.config.seed, grad_clip=self.grad_clip, generators=self.generators)
            self.net.eval()
        self.on_fit_end(train)
        return self

    def on_fit_start(self, train: Sequence[Sample], val: Sequence[Sample] | None,
                     anomalies: Sequence[Sample] | None) -> None:
        """What training needs before the first step (nothing by default)."""

    def training_step(self, batch: Any) -> dict[str, torch.Tensor]:
        """One batch of :meth:`train_loader` -> named loss terms; ``"loss"`` is minimised, the others are
        logged per epoch in :attr:`train_result`."""
        raise NotImplementedError(f"{type(self).__name__} has a net but no training_step.")

    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
        """``(optimizer, scheduler or None)``; by default Adam on ``config.lr`` over ``self.net``."""
        return torch.optim.Adam(self.net.parameters(), lr=self.config.lr), None

    def train_loader(self, train: Sequence[Sample], anomalies: Sequence[Sample] | None) -> DataLoader:
        """The batches :meth:`training_step` sees; by default the evaluation transform, shuffled."""
        return self.loader(train, shuffle=True)

    @property
    def grad_clip(self) -> float | None:
        """Gradient-norm clipping of each step (``None``: none)."""
        return None

    @property
    def generators(self) -> tuple[torch.Generator, ...]:
        """Private random generators :meth:`training_step` draws from (saved with training checkpoints)."""
        return ()

    def on_fit_end(self, train: Sequence[Sample]) -> None:
        """What follows the last training step (nothing by default)."""

    # ----- inference --------------------------------------------------------------------------
    def predict(self, batch: dict) -> AnomalyResult:
        raise NotImplementedError

    def hot_kernels(self, batch: dict) -> dict[str, tuple[Callable[[], Any], int]]:
        """Named inner steps of :meth:`predict` on ``batch``, each as ``(call, FLOPs)``, that
        ``nbhelpers bench --throughput`` times on their own against the machine's matrix-multiply rate
        (none by default; the baseline's nearest-neighbour search)."""
        return {}

    @torch.no_grad()
    def predict_all(self, samples: Sequence[Sample], keep_extras: bool = False) -> dict[str, Any]:
        """Run :meth:`predict` over ``samples``.

        Returns ``{"scores": float[N], "maps": float[N,H,W], "labels": long[N], "masks": float[N,H,W],
        "paths": list[str], "defects": list[str], "extras": list[dict]}`` on the CPU.
        """
        out: dict[str, list] = {k: [] for k in ("scores", "maps", "labels", "masks", "paths", "defects", "extras")}
        for batch in progress(self.loader(samples), desc=f"{self.name} predict", enabled=self.config.progress):
            res = reporting_out_of_memory(lambda: self.predict(batch), f"{self.name} predict", batch, self.device)
            out["scores"].append(res.scores.float().cpu())
            out["maps"].append(res.maps.float().cpu())
            out["labels"].append(batch["label"])
            out["masks"].append(batch["mask"][:, 0])
            out["paths"] += list(batch["path"])
            out["defects"] += list(batch["defect"])
            if keep_extras:
                out["extras"].append(res.extras)
        return {k: (torch.cat(v) if k in ("scores", "maps", "labels", "masks") else v) for k, v in out.items()}

    # ----- persistence ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain values that :meth:`load_state_dict` restores."""
        return {m: getattr(self, m).state_dict() for m in self.modules}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for m in self.modules:
            getattr(self, m).load_state_dict(state[m])

    def save(self, path: str | Path) -> Path:
        """Write config + state atomically (temporary file, then rename)."""
        return save_checkpoint(path, {"method": self.name, "config": self.config.to_dict(), "state": self.state_dict(),
                                      "train_result": dataclasses.asdict(self.train_result),
                                      "fitted_on": dict(self.fitted_on)})

    def load(self, path: str | Path) -> AnomalyMethod:
        """Restore a checkpoint written by :meth:`save` of the same method and configuration
        (``weights_only`` loading); only :data:`~nbhelpers.provenance.PREDICT_TIME_FIELDS` (device,
        batch size, workers, progress) may differ. :func:`load_method` builds the model from the
        checkpoint's own config instead.

        Raises:
            CheckpointError: not an nbhelpers checkpoint, one of another method, or one of another
                configuration (the message names each field with both values).
        """
        return self.load_from(load_checkpoint(path, expect={"method": self.name}), path)

    def load_from(self, ckpt: dict[str, Any], path: str | Path) -> AnomalyMethod:
        """:meth:`load` of a checkpoint already read (``path`` names it in the messages)."""
        if ckpt.get("method") != self.name:
            raise CheckpointError(f"{path}: checkpoint has method={ckpt.get('method')!r}, expected {self.name!r}.")
        differ = config_differences(ckpt.get("config") or {}, self.config.to_dict())
        if differ:
            listed = ", ".join(f"{k}={v[0]!r} (this model: {v[1]!r})" for k, v in differ.items())
            raise CheckpointError(
                f"{path}: this {self.name} checkpoint was trained with {listed}; a model of another configuration "
                f"would score wrongly. Create the model with the checkpoint's values, or use "
                f"nbhelpers.methods.load_method(path) / `nbhelpers predict --checkpoint {path}`, which read them.")
        try:
            self.load_state_dict(ckpt["state"])
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(f"{path}: its {self.name} state does not fit this model ({exc.__class__.__name__}: "
                                  f"{str(exc).splitlines()[0][:300]}); delete it and train again.") from exc
        self.train_result = TrainResult(**ckpt.get("train_result", {}))
        self.fitted_on = dict(ckpt.get("fitted_on") or {})
        return self

    def fit_and_save(self, path: str | Path, train: Sequence[Sample], val: Sequence[Sample] | None = None,
                     anomalies: Sequence[Sample] | None = None, resume: bool = False) -> Path:
        """:meth:`fit` with a training checkpoint after every epoch, then :meth:`save` to ``path``.

        The training checkpoints live in ``<path>.train/`` (see :func:`nbhelpers.train.checkpointing`)
        and survive an interruption (Ctrl-C, SIGTERM: atomic writes); with ``resume`` the training
        continues from them, otherwise it starts afresh. They are deleted once ``path`` is written.
        """
        path = Path(path)
        folder = path.with_suffix(".train")
        with checkpointing(folder, resume=resume):
            self.fit(train, val, anomalies=anomalies)
        if distributed.is_main():
            self.save(path)
            shutil.rmtree(folder, ignore_errors=True)
        distributed.barrier()
        return path


_REGISTRY: dict[str, type[AnomalyMethod]] = {}


def register(cls: type[AnomalyMethod]) -> type[AnomalyMethod]:
    """Class decorator adding a method to the registry under ``cls.name``."""
    _REGISTRY[cls.name] = cls
    return cls


def available() -> list[str]:
    """Names of the registered methods (imports every module of ``nbhelpers.methods`` first)."""
    import importlib
    import pkgutil

    import nbhelpers.methods as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name != "base":
            importlib.import_module(f"nbhelpers.methods.{info.name}")
    return sorted(_REGISTRY)


def get(name: str) -> type[AnomalyMethod]:
    """The method class registered as ``name``.

    Raises:
        ConfigError: unknown name (valid names listed).
    """
    names = available()
    if name not in _REGISTRY:
        raise ConfigError(f"Unknown method {name!r}; valid methods: {names}.")
    return _REGISTRY[name]


def get_config(name: str, preset: str = "cpu", **overrides: Any) -> MethodConfig:
    """``get(name).config_class.from_preset(preset, **overrides)``."""
    return get(name).config_class.from_preset(preset, **overrides)


def create(name: str, preset: str = "cpu", **overrides: Any) -> AnomalyMethod:
    """A new method instance from its registry name and a preset."""
    return get(name)(get_config(name, preset, **overrides))


def load_method(path: str | Path, **overrides: Any) -> AnomalyMethod:
    """The fitted method saved at ``path``, built from the config stored in the checkpoint.

    ``overrides`` may change only :data:`~nbhelpers.provenance.PREDICT_TIME_FIELDS` (e.g.
    ``device="cuda"``, ``batch_size=64``); any other field raises a :class:`CheckpointError` naming it.
    """
    ckpt = load_checkpoint(path)
    cls = get(str(ckpt.get("method")))
    config = cls.config_class.from_preset("cpu", **{**(ckpt.get("config") or {}), **overrides})  # cpu = the defaults
    return cls(config).load_from(ckpt, path)
