"""nbhelpers: the tested helper package of the visual anomaly detection notebook collection.

Top level: :func:`seed_everything`, :func:`get_device` and :func:`set_threads`. Sub-packages: ``data`` (readers, SynthAD,
synthetic anomalies, torch datasets), ``backbones``, ``metrics``, ``methods``, ``train``, ``viz``,
``runner`` and ``cli``.
"""
from __future__ import annotations

import os
import random

import numpy as np

__version__ = "0.1.0"


def seed_everything(seed: int = 0, deterministic: bool = True) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA) so runs repeat.

    With ``deterministic=True`` PyTorch is asked for deterministic kernels where it has them
    (``warn_only``: kernels without a deterministic version still run).
    """
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def get_device(device: str | None = "auto"):
    """The torch device to run on: ``"auto"``/``None`` picks CUDA when present, else CPU.

    Raises:
        ConfigError: when CUDA is asked for but not available.
    """
    import torch

    from nbhelpers.errors import ConfigError

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"DEVICE={device!r} asked for CUDA but no CUDA device is available; use 'auto' or 'cpu'.")
    return dev


def set_threads(limit: int = 4) -> int:
    """Set PyTorch's CPU thread count and return it.

    ``OMP_NUM_THREADS`` wins when set (e.g. ``OMP_NUM_THREADS=1`` for several notebooks or bench runs
    side by side: oversubscribed OpenMP threads can slow each process down many times); otherwise
    ``min(limit, CPU cores)``.
    """
    import torch

    env = os.environ.get("OMP_NUM_THREADS", "")
    n = int(env) if env.isdigit() and int(env) > 0 else min(limit, os.cpu_count() or 1)
    torch.set_num_threads(n)
    return n
