"""Inference speed of a fitted method: images/s per batch size, FLOPs per image and the attained rate.

``nbhelpers bench --throughput`` prints one row per method and batch size. Work is counted with
``torch.utils.flop_counter.FlopCounterMode`` (matrix products, convolutions and attention: 2 FLOP per
multiply-add; element-wise work is not counted) and split into the frozen ``backbone`` (when the
method has one) and the rest of ``predict`` ("scoring"). The attained rate is compared with the
machine's measured matrix-multiply rate (:func:`matmul_peak_gflops`), the best a dense kernel can do.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from nbhelpers.benchmark import hold_out_anomalies, timed_fit
from nbhelpers.data.layouts import load_split
from nbhelpers.methods.base import AnomalyMethod, create
from nbhelpers.train import autocast, to_device

THROUGHPUT_COLUMNS = ("method", "device", "image_size", "batch_size", "images_per_s", "ms_per_image",
                      "backbone_gflop", "backbone_ms", "scoring_gflop", "scoring_ms", "gflop_per_s", "pct_peak",
                      "kernel", "kernel_gflop_per_s", "kernel_pct_peak", "train_images_per_s")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], Any], device: torch.device, repeats: int = 5) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls after one warm-up call (CUDA
    synchronised around each call, none inside)."""
    with torch.inference_mode():
        fn()
        times = []
        for _ in range(repeats):
            _synchronize(device)
            t0 = time.perf_counter()
            fn()
            _synchronize(device)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of ``fn`` (matrix products, convolutions, attention; 2 per multiply-add)."""
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_peak_gflops(device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    """The measured matrix-multiply rate in GFLOP/s: an ``n x n`` by ``n x n`` product in the precision
    the methods compute in (float32 on a CPU, bf16 autocast on CUDA), median of ``repeats``."""
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=gen).to(device) for _ in range(2))

    def product() -> torch.Tensor:
        with autocast(device):
            return a @ b

    return 2 * n ** 3 / median_seconds(product, device, repeats) / 1e9


def _rate(flops: float, seconds: float) -> float:
    return flops / seconds / 1e9 if seconds > 0 else float("nan")


def measure_batch(model: AnomalyMethod, batch: dict, peak: float, repeats: int = 5) -> dict[str, Any]:
    """Time and count one ``predict`` of ``batch`` (and its backbone part, and the method's
    :meth:`~nbhelpers.methods.base.AnomalyMethod.hot_kernels`); per-image numbers."""
    n = len(batch["image"])
    images = to_device(batch["image"], model.device)
    total_s = median_seconds(lambda: model.predict(batch), model.device, repeats)
    total_flops = count_flops(lambda: model.predict(batch))
    backbone = getattr(model, "backbone", None)
    backbone_s = median_seconds(lambda: backbone(images), model.device, repeats) if backbone is not None else 0.0
    backbone_flops = count_flops(lambda: backbone(images)) if backbone is not None else 0
    row = {"batch_size": n, "images_per_s": n / total_s, "ms_per_image": 1000 * total_s / n,
           "backbone_gflop": backbone_flops / n / 1e9, "backbone_ms": 1000 * backbone_s / n,
           "scoring_gflop": (total_flops - backbone_flops) / n / 1e9,
           "scoring_ms": 1000 * max(total_s - backbone_s, 0.0) / n,
           "gflop_per_s": _rate(total_flops, total_s), "pct_peak": 100 * _rate(total_flops, total_s) / peak}
    with torch.inference_mode():
        kernels = model.hot_kernels(batch)
    for name, (fn, flops) in kernels.items():  # one named kernel per method so far: one set of columns
        rate = _rate(flops, median_seconds(fn, model.device, repeats))
        row.update(kernel=name, kernel_gflop_per_s=rate, kernel_pct_peak=100 * rate / peak)
    return row


def throughput(method: str, data_root: str | Path, category: str, preset: str = "cpu",
               batch_sizes: Sequence[int] = (1, 32, 128), device: str = "auto", seed: int = 0, repeats: int = 5,
               layout: str = "auto", peak: float | None = None, **overrides: Any) -> list[dict[str, Any]]:
    """Inference speed of a fitted method at several batch sizes.

    The method is fitted on the category's training images (pass e.g. ``epochs=1`` in ``overrides``
    to keep that short: speed does not depend on how well it learned), then ``predict`` runs on a
    batch of real test images (repeated up to the batch size): one warm-up call, then the median of
    ``repeats`` timed calls (:func:`measure_batch`). ``peak``: the matrix-multiply rate to compare
    with (measured by :func:`matmul_peak_gflops` when ``None``). Each row also carries the training
    speed ``train_images_per_s`` = training images x epochs / fit seconds (the fit includes one-off
    work such as banks, prototypes or reference features) and ``peak_gflop_per_s``.
    """
    split = load_split(data_root, category, layout=layout)
    model = create(method, preset, device=device, seed=seed, **overrides)
    peak = matmul_peak_gflops(model.device) if peak is None else peak
    seen, split = hold_out_anomalies(split, model.seen_anomalies, seed)
    fit_s = timed_fit(model, split.train, split.val, seen)
    train_images_per_s = len(split.train) * max(model.config.epochs, 1) / fit_s
    rows = []
    for bs in batch_sizes:
        samples = (split.test * (bs // max(len(split.test), 1) + 1))[:bs]
        batch = next(iter(model.loader(samples, batch_size=bs)))
        rows.append({"method": method, "preset": preset, "device": str(model.device),
                     "image_size": model.config.image_size, **measure_batch(model, batch, peak, repeats),
                     "peak_gflop_per_s": peak, "fit_s": fit_s, "train_images_per_s": train_images_per_s})
    return rows
