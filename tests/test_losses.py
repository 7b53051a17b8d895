import math

import torch

from nbhelpers.losses import cosine_distance_map, focal_loss


def test_focal_loss_hand_computed():
    prob = torch.tensor([0.9, 0.2])
    target = torch.tensor([1.0, 0.0])
    a, g = 0.25, 2.0
    expected = (-(a * (0.1 ** g) * math.log(0.9)) - ((1 - a) * (0.2 ** g) * math.log(0.8))) / 2
    assert abs(float(focal_loss(prob, target, alpha=a, gamma=g)) - expected) < 1e-6
    # gamma 0 and no alpha is binary cross-entropy
    bce = torch.nn.functional.binary_cross_entropy(prob, target)
    assert abs(float(focal_loss(prob, target, alpha=None, gamma=0.0)) - float(bce)) < 1e-6


def test_cosine_distance_map():
    a = torch.randn(2, 5, 3, 3)
    assert torch.allclose(cosine_distance_map(a, a), torch.zeros(2, 3, 3), atol=1e-6)
    assert torch.allclose(cosine_distance_map(a, -a), 2 * torch.ones(2, 3, 3), atol=1e-6)
