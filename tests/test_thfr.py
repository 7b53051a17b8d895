"""THFR: shapes, gradients, template search, relation feature, loss, maps, training, persistence."""
import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nbhelpers.backbones import FeatureExtractor
from nbhelpers.benchmark import run_benchmark
from nbhelpers.data.layouts import load_split
from nbhelpers.errors import ConfigError
from nbhelpers.methods import available, create, get_config, load_method
from nbhelpers.methods.base import PRESET_NAMES, AnomalyResult
from nbhelpers.methods.thfr import (
    Config,
    FeatureVisualizer,
    TemplateBank,
    THFRNet,
    TemplateAlignment,
    anomaly_map,
    by_layout,
    draw_template,
    image_nns,
    relation_feature,
    restoration_loss,
    template_agreement,
)


def _features(backbone: FeatureExtractor, batch: int = 2, size: int = 64, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return backbone(torch.randn(batch, 3, size, size, generator=g))


@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet18"])
def test_shapes_at_every_stage(name):
    backbone = FeatureExtractor(name, (1, 2, 3), weights=None)
    cfg = Config.from_preset("smoke", backbone=name, weights=None, device="cpu", use_local=True)  # G-L
    feats = _features(backbone)
    tpl = _features(backbone, seed=1)
    net = THFRNet(backbone.channels, backbone.reductions, 64, cfg).eval()
    c, g = 2 * backbone.channels[-1], 64 // (2 * backbone.reductions[-1])
    assert net.grid == g == 2
    with torch.no_grad():
        assert net.gbn(feats[-1]).shape == (2, c, g, g)
        z = net.lbn(feats)
        assert z.shape == (2, c, g, g)
        deep, levels = backbone.channels[-1], len(backbone.channels)
        own_g, own_l = net.gbn_template(tpl, g), net.lbn_template(tpl, g)  # each branch its own levels
        assert own_g.shape == (2, deep, g, g) and own_l.shape == (2, deep * levels, g, g)
        pooled = TemplateAlignment(backbone.channels, backbone.reductions, 2 * backbone.reductions[-1],
                                   range(levels), deep, "pooled")
        assert pooled(tpl, g).shape == (2, sum(backbone.channels), g, g)
        assert net.gbn_compensation.input_embedding(z).shape[1] == c  # GBN branch: C_i = C
        assert net.gbn_compensation.template_embedding(own_g).shape[1] == 1  # C_t = 1
        assert net.lbn_compensation.input_embedding(z).shape[1] == 1  # LBN branch: C_i = 1
        assert net.lbn_compensation.template_embedding(own_l).shape[1] == c  # C_t = C
        assert net.lbn_compensation.relation(z, own_l).shape == (2, 2 * g * g, g, g)
        assert net.lbn_compensation(z, own_l).shape == (2, c, g, g)
        assert net.compress(feats, tpl).shape == (2, c, g, g)
        restored = net(feats, tpl)
    assert [r.shape for r in restored] == [f.shape for f in feats]
    vis = FeatureVisualizer(backbone.channels, backbone.reductions, width=8)
    assert vis(feats).shape == (2, 3, 64, 64)


def test_gradients_reach_every_trainable_module():
    backbone = FeatureExtractor("efficientnet_lite0", (1, 2, 3), weights=None)
    cfg = Config.from_preset("smoke", weights=None, device="cpu", use_local=True)  # both branches
    net = THFRNet(backbone.channels, backbone.reductions, 64, cfg).train()
    feats, tpl = _features(backbone, batch=3), _features(backbone, batch=3, seed=1)
    restoration_loss(feats, net(feats, tpl)).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing
    vis = FeatureVisualizer(backbone.channels, backbone.reductions, width=8)
    F.mse_loss(vis(feats), torch.randn(3, 3, 64, 64)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in vis.parameters())


def test_image_nns_returns_true_nearest_neighbours():
    g = torch.Generator().manual_seed(0)
    bank = TemplateBank([torch.randn(12, 4, 3, 3, generator=g), torch.randn(12, 5, 2, 2, generator=g)],
                        [f"img{i}" for i in range(12)])
    # query 0 is a scaled, slightly perturbed copy of entry 7: cosine must find 7 despite the scale
    query = torch.randn(3, 5, 2, 2, generator=g)
    query[0] = 10 * bank.features[-1][7] + 0.01 * torch.randn(5, 2, 2, generator=g)
    index, sim = image_nns(query, bank.keys, n=3)
    assert index[0, 0] == 7 and sim[0, 0] > 0.99
    for b in range(3):  # brute force: a loop over bank entries
        brute = torch.tensor([F.cosine_similarity(query[b].flatten(), bank.features[-1][i].flatten(), dim=0)
                              for i in range(12)])
        order = brute.argsort(descending=True)[:3]
        assert index[b].tolist() == order.tolist()
        torch.testing.assert_close(sim[b], brute[order], rtol=1e-5, atol=1e-5)
    excluded, _ = image_nns(query, bank.keys, n=2, exclude=torch.tensor([7, 0, 0]))
    assert 7 not in excluded[0].tolist() and 0 not in excluded[1].tolist()
    cand = bank.candidates(20)  # clipped to the N - 1 other entries, never itself
    assert cand.shape == (12, 11) and all(i not in cand[i].tolist() for i in range(12))
    pick = draw_template(cand, torch.Generator().manual_seed(0))
    assert all(int(pick[i]) in cand[i].tolist() for i in range(12))


def test_bank_subsample_keeps_diverse_entries():
    centers = torch.eye(4).repeat_interleave(5, 0)  # 4 clusters of 5 nearly identical images
    feats = (centers + 0.01 * torch.randn(20, 4)).view(20, 4, 1, 1)
    bank = TemplateBank([feats], [str(i) for i in range(20)])
    small = bank.subsample(0.2, projection_dim=4)
    assert len(small) == 4 and small.features[0].shape == (4, 4, 1, 1)
    assert {int(p) // 5 for p in small.paths} == {0, 1, 2, 3}  # one template of every cluster
    assert bank.subsample(1.0) is bank


def test_relation_feature_hand_computed():
    # theta(I) at positions (0,0), (0,1): (1, 2), (0, 1); phi(T): (3, -1), (1, 1)
    q = torch.tensor([[1.0, 0.0], [2.0, 1.0]]).view(1, 2, 1, 2)
    k = torch.tensor([[3.0, 1.0], [-1.0, 1.0]]).view(1, 2, 1, 2)
    # R[i, j] = theta(I^i) . phi(T^j) = [[1, 3], [-1, 1]]; r_i = [R[i, :], R[:, i]]
    expected = torch.tensor([[1.0, -1.0], [3.0, 1.0], [1.0, 3.0], [-1.0, 1.0]]).view(1, 4, 1, 2)
    torch.testing.assert_close(relation_feature(q, k), expected)


def test_loss_and_maps():
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(2, 6, 8, 8, generator=g), torch.randn(2, 10, 4, 4, generator=g)]
    assert float(restoration_loss(feats, feats)) == pytest.approx(0.0, abs=1e-6)
    assert float(restoration_loss(feats, [2.5 * f for f in feats])) == pytest.approx(0.0, abs=1e-6)  # scale-free
    assert float(restoration_loss(feats, [-f for f in feats])) == pytest.approx(4.0, abs=1e-5)  # 2 levels x (1 - (-1))
    restored = [f + torch.randn(f.shape, generator=g) for f in feats]
    maps, levels = anomaly_map(feats, restored, 16, sigma=0)
    for level, f, r in zip(levels, feats, restored):  # Eq. 4 by a loop over positions
        b, _, h, w = f.shape
        brute = torch.tensor([[[1 - float(f[i, :, y, x] @ r[i, :, y, x]) / float(f[i, :, y, x].norm() * r[i, :, y, x].norm())
                                for x in range(w)] for y in range(h)] for i in range(b)])
        torch.testing.assert_close(level, brute, rtol=1e-4, atol=1e-4)
    expected = sum(F.interpolate(m[:, None], size=16, mode="bilinear", align_corners=False)[:, 0] for m in levels)
    torch.testing.assert_close(maps, expected)  # Eq. 5
    smoothed, _ = anomaly_map(feats, restored, 16, sigma=2)
    assert smoothed.shape == (2, 16, 16) and smoothed.std() < maps.std()


def test_config_validation_and_presets():
    assert "thfr" in available()
    for preset in PRESET_NAMES:
        assert get_config("thfr", preset).image_size > 0
    paper = get_config("thfr", "paper")
    assert (paper.backbone, paper.layers, paper.lr, paper.epochs, paper.batch_size) == \
        ("wide_resnet50_2.tv_in1k", (1, 2, 3), 0.005, 200, 16)
    assert paper.use_global and paper.use_local and not get_config("thfr", "cpu").use_local  # G-L vs GBN
    with pytest.raises(ConfigError, match="bottleneck"):
        get_config("thfr", "smoke", use_global=False, use_local=False)
    with pytest.raises(ConfigError, match="use_template"):
        get_config("thfr", "smoke", use_template=False)
    with pytest.raises(ConfigError, match="multiple"):
        create("thfr", "smoke", image_size=72, device="cpu")


@pytest.mark.parametrize("switches", [dict(use_global=False, use_local=True, use_template=False, use_relation=False),
                                      dict(use_template=False, use_relation=False),
                                      dict(use_relation=False), dict(use_local=True)],
                         ids=["lbn", "gbn", "no-relation", "g-l"])
def test_ablation_variants_run(switches):
    backbone = FeatureExtractor("efficientnet_lite0", (1, 2, 3), weights=None)
    cfg = Config.from_preset("smoke", weights=None, device="cpu", **switches)
    net = THFRNet(backbone.channels, backbone.reductions, 64, cfg)
    feats = _features(backbone)
    restored = net(feats, _features(backbone, seed=1) if cfg.use_template else None)
    assert [r.shape for r in restored] == [f.shape for f in feats]
    assert (net.gbn is None) == (not cfg.use_global) and (net.lbn is None) == (not cfg.use_local)


@pytest.fixture(scope="module")
def fitted(synth_root):
    split = load_split(synth_root, "kit")
    model = create("thfr", "smoke", device="cpu", epochs=6, seed=3).fit(split.train)
    return split, model


def test_short_training_lowers_loss_and_predicts(fitted, tmp_path):
    split, model = fitted
    assert len(model.train_result.losses) == 6 and model.train_result.losses[-1] < 0.8 * model.train_result.losses[0]
    batch = next(iter(model.loader(split.test[:3])))
    res = model.predict(batch)
    assert isinstance(res, AnomalyResult)
    assert res.scores.shape == (3,) and res.maps.shape == (3, 64, 64)
    torch.testing.assert_close(res.scores, res.maps.flatten(1).amax(1))
    assert res.extras["template_index"].shape == (3,) and len(res.extras["template_path"]) == 3
    assert all(p in {str(s.image) for s in split.train} for p in res.extras["template_path"])
    assert [m.shape[-1] for m in res.extras["level_maps"]] == [16, 8, 4]

    model.fit_visualizer(split.train, epochs=3)
    assert model.visualizer_result.losses[-1] < model.visualizer_result.losses[0]
    out = model.restore(batch["image"])
    assert model.visualize(out["restored"]).shape == (3, 3, 64, 64)

    path = model.save(tmp_path / "thfr.pt")
    again = create("thfr", "smoke", device="cpu", epochs=6, seed=3).load(path)
    torch.testing.assert_close(again.predict(batch).maps, res.maps, rtol=0, atol=0)
    torch.testing.assert_close(again.visualize(out["restored"]), model.visualize(out["restored"]))


def test_bank_paths_survive_another_working_directory(fitted, synth_root, tmp_path, monkeypatch):
    """`nbhelpers bench --data data/synthad` in the repository root, the checkpoint loaded in notebooks/."""
    model = copy.deepcopy(fitted[1])
    monkeypatch.chdir(Path(synth_root).parent)
    relative = load_split(Path(synth_root).name, "kit").train[:2]
    assert not Path(relative[0].image).is_absolute()
    model.bank = model.build_bank(relative)
    model.save(tmp_path / "thfr.pt")
    monkeypatch.chdir(tmp_path)
    assert all(Path(p).is_file() for p in load_method(tmp_path / "thfr.pt").bank.paths)


def test_same_seed_same_maps(fitted):
    split, model = fitted
    other = create("thfr", "smoke", device="cpu", epochs=6, seed=3).fit(split.train)
    assert other.train_result.losses == model.train_result.losses
    batch = next(iter(model.loader(split.test[:2])))
    torch.testing.assert_close(other.predict(batch).maps, model.predict(batch).maps, rtol=0, atol=0)


def test_bench_with_subsampled_bank(synth_root):
    row = run_benchmark("thfr", synth_root, "brick", preset="smoke", bank_ratio=0.5, epochs=1)
    for key in ("image_auroc", "pixel_auroc", "aupro", "fit_s", "ms_per_image"):
        assert key in row and not math.isnan(row[key])
    assert 0.0 <= row["pixel_auroc"] <= 1.0


def test_line_plot_figure():
    from nbhelpers import viz

    fig = viz.line_plot({"coreset": ([0.1, 0.5, 1.0], [0.8, 0.9, 0.95]), "random": ([0.1, 0.5, 1.0], [0.7, 0.85, 0.95])},
                        "ratio", "similarity", logx=True)
    ax = fig.axes[0]
    assert len(ax.lines) == 2 and ax.get_xscale() == "log" and ax.get_legend() is not None
    with pytest.raises(ValueError, match="x values"):
        viz.line_plot({"bad": ([1, 2], [1])})


# ------------------------------------------------------------------ paper components: swapped or removed, a test fails
@pytest.fixture(scope="module")
def tiny_net():
    backbone = FeatureExtractor("efficientnet_lite0", (1, 2, 3), weights=None).eval()
    torch.manual_seed(0)
    net = THFRNet(backbone.channels, backbone.reductions, 64, Config.from_preset("smoke", weights=None, use_local=True)).eval()
    return backbone, net  # the G-L bottleneck of the paper: both branches


def test_template_changes_the_restoration_through_both_branches(tiny_net):
    backbone, net = tiny_net
    feats, tpl_a, tpl_b = _features(backbone), _features(backbone, seed=1), _features(backbone, seed=2)
    with torch.no_grad():
        a, b = net(feats, tpl_a), net(feats, tpl_b)
        assert all(not torch.allclose(x, y) for x, y in zip(a, b))  # the template reaches every level
        z = net.lbn(feats)
        for level in range(3):  # the LBN branch sees every template level, the GBN branch the deepest only
            changed = [t.clone() for t in tpl_a]
            changed[level] = changed[level] + 1.0
            assert not torch.allclose(net.lbn_compensation(z, net.lbn_template(changed, net.grid)),
                                      net.lbn_compensation(z, net.lbn_template(tpl_a, net.grid)))
            same = torch.allclose(net.gbn_template(changed, net.grid), net.gbn_template(tpl_a, net.grid))
            assert same == (level < 2)
    target = restoration_loss(feats, a)
    assert float(restoration_loss(feats, b)) != pytest.approx(float(target))  # another template, another loss


def test_template_alignment_is_learned_not_pooled(tiny_net):
    backbone, net = tiny_net
    tpl = _features(backbone, seed=1)
    pooled = TemplateAlignment(backbone.channels, backbone.reductions, 32, range(3), backbone.channels[-1], "pooled")
    expected = torch.cat([F.adaptive_avg_pool2d(t, net.grid) for t in tpl], 1)
    torch.testing.assert_close(pooled(tpl, net.grid), expected)  # the ablation: average pooling
    learned = sum(p.numel() for p in net.lbn_template.parameters())
    assert learned > 0 and sum(p.numel() for p in pooled.parameters()) == 0
    assert get_config("thfr", "cpu").template_align == "conv"


def test_global_bottleneck_pools_by_maximum(tiny_net):
    backbone, net = tiny_net
    reformed = net.gbn.reform(_features(backbone)[-1])
    torch.testing.assert_close(net.gbn.pool(reformed), reformed.amax(dim=(2, 3), keepdim=True))


def test_n_and_sigma_follow_the_layout(synth_root):
    cfg = get_config("thfr", "cpu")
    assert by_layout(cfg, "mvtec_loco") == (1, 2.0) and by_layout(cfg, "mvtec_ad") == (6, 4.0)
    assert by_layout(get_config("thfr", "paper"), "mvtec_loco") == (1, 2.0)
    assert by_layout(get_config("thfr", "cpu", n_candidates=3, sigma=1.0), "mvtec_loco") == (3, 1.0)  # overridable
    for category, layout, expected in (("nuts", "mvtec_loco", (1, 2.0)), ("grass", "mvtec_ad", (6, 4.0))):
        split = load_split(synth_root, category)
        assert {s.layout for s in split.train} == {layout}
        model = create("thfr", "smoke", device="cpu", epochs=1)
        model.on_fit_start(split.train, None, None)
        assert (model.n_candidates, model.sigma) == expected
        assert model._candidates.shape == (len(split.train), expected[0])


def test_inference_uses_the_single_nearest_template(fitted):
    split, model = fitted
    batch = next(iter(model.loader(split.test[:4])))
    res = model.predict(batch)
    deepest = model.backbone(batch["image"])[-1].flatten(1)
    cos = F.normalize(deepest, dim=1) @ F.normalize(model.bank.features[-1].flatten(1), dim=1).T
    assert res.extras["template_index"].tolist() == cos.argmax(1).tolist()  # n = 1 at inference (§3.2)


def test_paper_preset_names_the_weights_the_paper_used():
    """RD4AD, on which THFR builds, used torchvision's ImageNet WideResNet-50: timm's ``tv_in1k`` tag
    (its own registry, offline), not timm's default recipe of ``wide_resnet50_2``."""
    from timm.models import get_pretrained_cfg

    paper = get_config("thfr", "paper")
    cfg = get_pretrained_cfg(paper.backbone)
    assert paper.weights == "timm" and cfg is not None
    assert cfg.url.startswith("https://download.pytorch.org/models/wide_resnet50_2-")


def test_template_agreement_against_loops():
    g = torch.Generator().manual_seed(3)
    q, t = torch.randn(2, 5, 3, 4, generator=g), torch.randn(2, 5, 3, 4, generator=g)
    aligned, matched = template_agreement(q, t)
    for b in range(2):
        cos = [[float(F.cosine_similarity(q[b, :, i // 4, i % 4], t[b, :, j // 4, j % 4], dim=0)) for j in range(12)]
               for i in range(12)]
        assert float(aligned[b]) == pytest.approx(sum(cos[i][i] for i in range(12)) / 12, abs=1e-5)
        assert float(matched[b]) == pytest.approx(sum(max(row) for row in cos) / 12, abs=1e-5)
    shifted = torch.roll(q, 1, dims=3)  # the same content one position over: matched stays, aligned drops
    a2, m2 = template_agreement(q, shifted)
    assert torch.all(m2 > 0.99) and torch.all(a2 < 0.9)
