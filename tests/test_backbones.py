import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from nbhelpers import backbones
from nbhelpers.backbones import (FeatureExtractor, available_layers, create_timm_model, load_classifier,
                                 packaged_weights_file)
from nbhelpers.errors import ConfigError, WeightsError

CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {967, 968, 504}  # espresso, cup, coffee mug


def _classify(model, image: np.ndarray) -> int:
    x = torch.from_numpy(np.asarray(Image.fromarray(image).resize((224, 224), Image.BICUBIC)).copy())
    x = (x.permute(2, 0, 1).float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        return int(model(x[None]).argmax())


@pytest.fixture(scope="module")
def classifier():
    return load_classifier("efficientnet_lite0", "packaged")


def test_packaged_weights_are_real_imagenet_weights(classifier):
    assert _classify(classifier, data.chelsea()) in CAT_CLASSES
    assert _classify(classifier, data.coffee()) in COFFEE_CLASSES


def test_random_weights_do_not_classify(classifier):
    random_model = load_classifier("efficientnet_lite0", None)
    preds = {_classify(random_model, data.chelsea()), _classify(random_model, data.coffee())}
    assert not (preds & CAT_CLASSES and preds & COFFEE_CLASSES)


def test_feature_extractor_shapes_and_frozen():
    fe = FeatureExtractor("efficientnet_lite0", layers=(1, 2, 3), weights="packaged")
    x = torch.randn(2, 3, 128, 96)
    feats = fe(x)
    assert [f.shape[1] for f in feats] == fe.channels == [24, 40, 112]
    assert fe.reductions == [4, 8, 16]
    assert [tuple(f.shape[-2:]) for f in feats] == [(32, 24), (16, 12), (8, 6)]
    assert not any(p.requires_grad for p in fe.parameters())
    fe.train()
    assert not fe.model.training
    assert fe.mean == fe.std == (0.5, 0.5, 0.5)


def test_feature_extractor_matches_classifier_trunk(classifier):
    fe = FeatureExtractor("efficientnet_lite0", layers=(4,), weights="packaged")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        trunk = classifier.blocks(classifier.bn1(classifier.conv_stem(x)))
    torch.testing.assert_close(fe(x)[0], trunk, rtol=1e-4, atol=1e-4)


def test_unused_stages_are_dropped_and_features_unchanged():
    """Levels (2, 3) of Lite0 need its first 5 of 7 stages; the features equal timm's full model's."""
    fe = FeatureExtractor("efficientnet_lite0", layers=(2, 3), weights="packaged")
    full = create_timm_model("efficientnet_lite0", "packaged", features_only=True, out_indices=(2, 3)).eval()
    assert len(fe.model.blocks) == 5 and len(full.blocks) == 7
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(fe(x), full(x)))


def test_cpu_micro_batches_give_the_one_pass_features(monkeypatch):
    """A CPU batch runs in near-equal micro-batches of at least 2 images (here forced to 2) with the same
    numbers; a lone image (computed by other kernels) is never split off."""
    fe = FeatureExtractor("efficientnet_lite0", layers=(1, 2, 3), weights="packaged")
    x = torch.randn(7, 3, 64, 64)
    with torch.no_grad():
        one_pass = fe.model(x)
    passes = []
    monkeypatch.setattr(fe.model, "forward", lambda chunk, f=fe.model.forward: passes.append(len(chunk)) or f(chunk))
    monkeypatch.setattr(backbones, "CPU_ACTIVATION_BYTES", 2 * 4 * 32 * 32 * 32)
    assert backbones.cpu_micro_batch((64, 64)) == 2
    feats = fe(x)
    assert passes == [3, 2, 2]
    assert all(torch.equal(a, b) for a, b in zip(feats, one_pass))


def test_other_backbone_random_init_and_local_file(tmp_path):
    fe = FeatureExtractor("resnet18", layers=(1, 2, 3), weights=None)
    assert fe.channels == [64, 128, 256]
    path = tmp_path / "r18.pth"
    torch.save(load_classifier("resnet18", None).state_dict(), path)
    fe2 = FeatureExtractor("resnet18", layers=(2,), weights=path)
    assert fe2(torch.randn(1, 3, 64, 64))[0].shape == (1, 128, 8, 8)


def test_safetensors_weights(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "r18.safetensors"
    save_file(load_classifier("resnet18", None).state_dict(), str(path))
    assert FeatureExtractor("resnet18", layers=(1,), weights=path).channels == [64]


def test_offline_hub_weights_give_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match="efficientnet_lite0.*packaged"):
        FeatureExtractor("resnet18", layers=(1,), weights="timm")


def test_mismatched_weights_file(tmp_path):
    path = tmp_path / "lite0.pth"
    path.write_bytes(packaged_weights_file().read_bytes())
    with pytest.raises(WeightsError, match="do not match"):
        FeatureExtractor("resnet18", layers=(1,), weights=path)


def test_bad_layer_and_name():
    with pytest.raises(ConfigError, match="no feature level"):
        FeatureExtractor("efficientnet_lite0", layers=(7,))
    with pytest.raises(ConfigError, match="Unknown backbone"):
        FeatureExtractor("not_a_net", layers=(1,))
    with pytest.raises(ConfigError, match="packaged"):
        FeatureExtractor("resnet18", layers=(1,), weights="packaged")
    assert len(available_layers("efficientnet_lite0")) == 5


def test_missing_or_corrupt_weights_file(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        FeatureExtractor("resnet18", layers=(1,), weights=tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="bad.pth"):
        FeatureExtractor("resnet18", layers=(1,), weights=bad)
