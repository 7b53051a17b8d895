"""Notebook 01 · image AUROC as the Mann-Whitney statistic."""
import numpy as np


def my_image_auroc(scores, labels):
    """P(score of a random anomalous image > score of a random normal image), ties counting 1/2.

    ``scores: float[N]``, ``labels: {0, 1}[N]`` -> ``float``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    anomalous = np.asarray(labels).astype(bool)
    pos, neg = scores[anomalous][:, None], scores[~anomalous][None, :]
    wins = np.count_nonzero(pos > neg) + 0.5 * np.count_nonzero(pos == neg)
    return float(wins / (pos.size * neg.size))
