"""Image-level nearest neighbour (the logical benchmark's positive control) against a brute-force loop."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nbhelpers.backbones import FeatureExtractor
from nbhelpers.data.layouts import load_split
from nbhelpers.data.torchdata import AnomalyDataset
from nbhelpers.image_level import image_level_scores


def test_scores_match_a_brute_force_loop(synth_root):
    split = load_split(synth_root, "kit")
    train, test = split.train[:5], split.test[:6]
    scores = image_level_scores(train, test, image_size=64, device="cpu")
    extractor = FeatureExtractor("efficientnet_lite0", (3,), "packaged")

    def deepest(sample):
        item = AnomalyDataset([sample], 64, extractor.mean, extractor.std)[0]
        return extractor(item["image"][None])[-1][0]  # [C, H, W]

    bank = [deepest(s) for s in train]
    for i, s in enumerate(test):
        q = deepest(s)
        template = min(1 - float(torch.nn.functional.cosine_similarity(q.flatten(), b.flatten(), dim=0)) for b in bank)
        pooled = min(1 - float(torch.nn.functional.cosine_similarity(q.mean((1, 2)), b.mean((1, 2)), dim=0))
                     for b in bank)
        assert scores["template"][i] == pytest.approx(template, abs=1e-5)
        assert scores["pooled"][i] == pytest.approx(pooled, abs=1e-5)


def test_a_training_image_is_its_own_nearest_neighbour(synth_root):
    split = load_split(synth_root, "nuts")
    scores = image_level_scores(split.train[:4], split.train[:4] + split.test[:2], image_size=64, device="cpu")
    for key, s in scores.items():
        assert np.allclose(s[:4], 0, atol=1e-5), key
        assert (s[4:] > 1e-4).all(), key
