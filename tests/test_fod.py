"""FOD: correlations, targets, divergences, min-max routing, scoring and the method contract."""
import math

import pytest
import torch

from nbhelpers.benchmark import run_benchmark
from nbhelpers.data.layouts import load_split
from nbhelpers.errors import ConfigError
from nbhelpers.methods import available, create, get_config, load_method
from nbhelpers.methods.base import PRESET_NAMES, AnomalyResult
from nbhelpers.methods.fod import (
    CorrelationAttention,
    FODTransformer,
    discrepancy_weight,
    grid_positions,
    inter_loss,
    intra_loss,
    rbf_target,
    reconstruction_discrepancy,
    routed_terms,
    row_entropy,
    sigma_from_logits,
    squared_axis_distances,
    symmetric_kl,
)


@pytest.fixture(scope="module")
def brick(synth_root):
    return load_split(synth_root, "brick")


@pytest.fixture(scope="module")
def fitted(brick):
    return create("fod", "smoke", device="cpu", seed=0, epochs=3).fit(brick.train)


def test_registry_and_presets():
    assert "fod" in available()
    for preset in PRESET_NAMES:
        assert get_config("fod", preset).image_size > 0
    paper = get_config("fod", "paper")
    assert (paper.backbone, paper.layers, paper.d_model, paper.heads, paper.n_layers) == ("tf_efficientnet_b6.aa_in1k", (2, 3), (256, 512), 8, 3)
    assert (paper.lambda1, paper.lambda2, paper.lr, paper.epochs, paper.image_size) == (0.5, 0.5, 1e-4, 100, 256)
    cpu = get_config("fod", "cpu")
    # the baseline's 256 px at strides 16, 32: the same 16x16 + 8x8 grids as 128 px at strides 8, 16
    assert (cpu.backbone, cpu.weights, cpu.layers, cpu.image_size) == ("efficientnet_lite0", "packaged", (3, 4), 256)
    assert get_config("fod", "smoke").layers == (2, 3)
    with pytest.raises(ConfigError, match="reference"):
        get_config("fod", "smoke", reference="kmeans")
    with pytest.raises(ConfigError, match="one value per"):
        get_config("fod", "smoke", d_model=(32,))
    with pytest.raises(ConfigError, match="divisible"):
        get_config("fod", "smoke", d_model=(30, 32))


def test_grid_distances_match_loops():
    pos = grid_positions(3, 4)
    assert pos.tolist()[:5] == [[0, 0], [0, 1], [0, 2], [0, 3], [1, 0]]
    d = squared_axis_distances(pos, pos[[5, 0]])
    for i in range(12):
        for j, ref in enumerate([5, 0]):
            assert d[0, i, j] == (i // 4 - ref // 4) ** 2 and d[1, i, j] == (i % 4 - ref % 4) ** 2


def test_target_rows_sum_to_one_peak_at_self_and_match_hand_computation():
    pos = grid_positions(5, 6)
    dist = squared_axis_distances(pos, pos)
    sigma = sigma_from_logits(torch.randn(2, 3, 30, 2, generator=torch.Generator().manual_seed(0)))
    assert float(sigma.min()) > 0 and float(sigma.max()) <= 2 + 1e-4
    t = rbf_target(sigma, dist)
    assert t.shape == (2, 3, 30, 30)
    torch.testing.assert_close(t.sum(-1), torch.ones(2, 3, 30))
    assert torch.equal(t.argmax(-1), torch.arange(30).expand(2, 3, 30))
    # 1 x 3 grid, query at column 0, sigma_x = 1: weights exp(0), exp(-1/2), exp(-4/2), normalised
    line = squared_axis_distances(grid_positions(1, 3), grid_positions(1, 3))
    t = rbf_target(torch.tensor([1.0, 1.0]).view(1, 1, 1, 2).expand(1, 1, 3, 2), line)
    w = [1.0, math.exp(-0.5), math.exp(-2.0)]
    torch.testing.assert_close(t[0, 0, 0], torch.tensor([v / sum(w) for v in w]))
    # a wider kernel is flatter (lower peak)
    narrow = rbf_target(torch.full((1, 1, 30, 2), 0.5), dist)
    wide = rbf_target(torch.full((1, 1, 30, 2), 2.0), dist)
    assert bool((wide.amax(-1) < narrow.amax(-1)).all())


def test_symmetric_kl_and_entropy():
    p = torch.tensor([[0.5, 0.5], [0.2, 0.8]])
    assert torch.allclose(symmetric_kl(p, p), torch.zeros(2))
    q = torch.tensor([0.9, 0.1])
    e = 1e-4
    hand = sum(a * (math.log(a + e) - math.log(b + e)) + b * (math.log(b + e) - math.log(a + e)) for a, b in zip([0.5, 0.5], [0.9, 0.1]))
    torch.testing.assert_close(symmetric_kl(p[0], q), torch.tensor(hand))
    torch.testing.assert_close(symmetric_kl(p[0], q), symmetric_kl(q, p[0]))
    for n in (4, 64):
        assert abs(float(row_entropy(torch.full((n,), 1.0 / n), eps=0.0)) - math.log(n)) < 1e-5
        assert abs(float(row_entropy(torch.full((n,), 1.0 / n))) - math.log(n)) < 1e-2
    assert float(row_entropy(torch.tensor([1.0, 0.0, 0.0]))) < 1e-3


def test_attention_rows_sum_to_one():
    torch.manual_seed(0)
    attn = CorrelationAttention(16, 4)
    pos = grid_positions(4, 4)
    x, ref = torch.randn(3, 16, 16), torch.randn(1, 5, 16)
    z, s, t, sigma = attn(x, ref, squared_axis_distances(pos, pos[:5]))
    assert z.shape == (3, 16, 16) and s.shape == t.shape == (3, 4, 16, 5) and sigma.shape == (3, 4, 16, 2)
    torch.testing.assert_close(s.sum(-1), torch.ones(3, 4, 16))
    torch.testing.assert_close(t.sum(-1), torch.ones(3, 4, 16))


def test_routing_sends_gradients_only_where_intended():
    g = torch.Generator().manual_seed(0)
    s = torch.softmax(torch.randn(2, 2, 6, 6, generator=g), -1).requires_grad_()
    t = torch.softmax(torch.randn(2, 2, 6, 6, generator=g), -1).requires_grad_()
    terms = routed_terms(s, t)
    torch.testing.assert_close(terms["div_attn"], terms["div_sigma"])
    terms["div_attn"].sum().backward(retain_graph=True)
    assert t.grad is None and s.grad.abs().sum() > 0
    s.grad = None
    terms["div_sigma"].sum().backward()
    assert s.grad is None and t.grad.abs().sum() > 0
    # inside a layer: the sigma route reaches only the sigma projection, the attention route only Q/K
    torch.manual_seed(0)
    attn = CorrelationAttention(8, 2)
    pos = grid_positions(3, 3)
    x = torch.randn(2, 9, 8)
    _, s, t, _ = attn(x, x, squared_axis_distances(pos, pos))
    terms = routed_terms(s, t)
    terms["div_sigma"].mean().backward(retain_graph=True)
    assert attn.target.sigma_projection.weight.grad.abs().sum() > 0
    assert attn.query.weight.grad is None and attn.key.weight.grad is None
    attn.zero_grad(set_to_none=True)
    terms["div_attn"].mean().backward()
    assert attn.query.weight.grad.abs().sum() > 0 and attn.key.weight.grad.abs().sum() > 0
    assert attn.target.sigma_projection.weight.grad is None


def test_loss_signs_are_opposite_for_the_two_branches():
    da, ds, ent = (torch.tensor(1.0, requires_grad=True) for _ in range(3))
    intra_loss(da, ds, ent, 0.5, 0.25).backward()
    assert (float(da.grad), float(ds.grad), float(ent.grad)) == (-0.5, 0.5, -0.25)  # attention maximises Div and Ent
    da2, ds2, ent2 = (torch.tensor(1.0, requires_grad=True) for _ in range(3))
    inter_loss(da2, ds2, ent2, 0.5, 0.25).backward()
    assert (float(da2.grad), float(ds2.grad), float(ent2.grad)) == (0.5, -0.5, 0.25)  # attention minimises them


def test_reconstruction_and_discrepancy_weight():
    x = torch.tensor([[[3.0, 4.0], [1.0, 0.0]]])
    x_hat = torch.tensor([[[0.0, 0.0], [1.0, 0.0]]])
    # official: MSELoss per patch ((9 + 16) / 2) + 1 - cos (cos with the zero vector is 0)
    torch.testing.assert_close(reconstruction_discrepancy(x, x_hat), torch.tensor([[12.5 + 1.0, 0.0]]))
    div = torch.tensor([[0.1, 0.5, 3.0, 0.2], [1.0, 1.0, 1.0, 1.0]])
    w = discrepancy_weight(div)
    for b in range(2):  # the official code: inter_score = softmax(-Div); max(inter_score) - inter_score
        e = [math.exp(-float(d)) for d in div[b]]
        p = [v / sum(e) for v in e]
        torch.testing.assert_close(w[b], torch.tensor([max(p) - v for v in p]))
        torch.testing.assert_close(discrepancy_weight(div, larger_is_anomalous=False)[b], torch.tensor(p))
    assert int(w[0].argmax()) == 2 and float(w[0, 0]) == 0 and torch.allclose(w[1], torch.zeros(4))
    torch.testing.assert_close(discrepancy_weight(div[:1]), w[:1])  # per image: the batch does not matter
    torch.testing.assert_close(discrepancy_weight(div + 5.0), w)     # only differences of divergences count
    # the scale max(p) stays: an image whose best patch stands out gets larger weights than an even one
    even, peaked = discrepancy_weight(torch.tensor([[1.0, 1.1, 1.2, 3.0]])), discrepancy_weight(torch.tensor([[0.0, 3.0, 3.1, 3.0]]))
    assert float(peaked.amax()) > float(even.amax())


def test_layer_output_follows_the_official_code():
    """Both branches: ``(X + Z_g) - (X + Z_e)``, the residuals cancel; one branch: ``X + Z``;
    ``residual=True``: Eq. 1 as printed, ``Z_g - Z_e + X``. Checked against the official formula
    written out with the layer's own attention modules."""
    from nbhelpers.methods.fod.modules import FODLayer

    torch.manual_seed(0)
    pos = grid_positions(3, 4)
    x, ref = torch.randn(2, 12, 16), torch.randn(1, 5, 16)
    geometry = {"intra": squared_axis_distances(pos, pos), "inter": squared_axis_distances(pos, pos[:5])}

    def official(layer, new_x):
        y = layer.norm1(new_x)
        return layer.norm2(layer.ffn(y) + y)

    for residual in (False, True):
        layer = FODLayer(16, 4, residual=residual).eval()
        z_g = layer.correlation.intra(x, x, geometry["intra"])[0]
        z_e = layer.correlation.inter(x, ref, geometry["inter"])[0]
        expected = official(layer, (x + z_g) - (x + z_e) + (x if residual else 0))
        torch.testing.assert_close(layer(x, ref, geometry)[0], expected)
    for over in (dict(inter=False), dict(intra=False), dict(intra=False, inter=False)):
        layer = FODLayer(16, 4, **over).eval()
        attn = layer.correlation.intra or layer.correlation.inter
        z = attn(x, x if layer.correlation.intra else ref, geometry["intra" if layer.correlation.intra else "inter"])[0]
        sign = 1.0 if layer.correlation.intra else -1.0
        torch.testing.assert_close(layer(x, ref, geometry)[0], official(layer, x + sign * z))


def test_attention_logits_are_float32_under_bf16_autocast():
    torch.manual_seed(0)
    attn = CorrelationAttention(32, 4)
    pos = grid_positions(4, 4)
    x = torch.randn(2, 16, 32) * 4
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, s, _, _ = attn(x, x, squared_axis_distances(pos, pos))
        q, k = attn._split(attn.query(x)), attn._split(attn.key(x))  # bf16 projections, as inside the module
    assert q.dtype == torch.bfloat16 and s.dtype == torch.float32
    reference = torch.softmax(q.float() @ k.float().transpose(-1, -2) / math.sqrt(attn.d_head), -1)
    torch.testing.assert_close(s, reference, rtol=0, atol=1e-6)
    bf16_logits = torch.softmax((q / math.sqrt(attn.d_head) @ k.transpose(-1, -2)).float(), -1)
    assert float((bf16_logits - reference).detach().abs().max()) > 1e-4  # what the float32 logits avoid


def test_transformer_shapes_and_gradients_reach_every_module():
    torch.manual_seed(0)
    net = FODTransformer(in_channels=6, d_model=16, heads=2, n_layers=2)
    net.set_reference(torch.randn(12, 6), torch.arange(12))
    x = torch.randn(3, 6, 3, 4)
    x_hat, terms = net(x, keep=True)
    assert x_hat.shape == (3, 12, 6)
    assert terms["intra"]["attention"].shape == (3, 2, 2, 12, 12) and terms["inter"]["sigma"].shape == (3, 2, 2, 12, 2)
    assert terms["intra"]["div_attn"].shape == (3, 12)
    loss = (x_hat - x.flatten(2).transpose(1, 2)).square().mean()
    for branch, fn in (("intra", intra_loss), ("inter", inter_loss)):
        t = {k: terms[branch][k].mean() for k in ("div_attn", "div_sigma", "entropy")}
        loss = loss + fn(t["div_attn"], t["div_sigma"], t["entropy"], 0.5, 0.5)
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing
    # a coreset-style reference of another size (positions kept) works too
    net.set_reference(torch.randn(5, 6), torch.tensor([0, 0, 3, 7, 11]))
    _, terms = net(x, keep=True)
    assert terms["inter"]["attention"].shape == (3, 2, 2, 12, 5)


def test_ablation_variants_build():
    images = torch.randn(2, 3, 32, 32)
    for over, branches in ((dict(intra=False, inter=False, scoring="rec"), set()), (dict(inter=False), {"intra"}),
                           (dict(residual=True, intra_entropy=False), {"intra", "inter"})):
        model = create("fod", "smoke", device="cpu", weights=None, **over)
        for net, x in zip(model.net, model.features(images)):
            net.set_reference(x[0].flatten(1).T, torch.arange(x.shape[-2] * x.shape[-1]))
        out = model.training_step({"image": images})
        assert torch.isfinite(out["loss"]) and {b for b in ("intra", "inter") if out[f"ent_{b}"] != 0} == branches
    with pytest.raises(ConfigError, match="needs the intra or inter"):
        get_config("fod", "smoke", intra=False, inter=False)


def test_training_step_counts_the_reconstruction_in_both_official_passes():
    images = torch.randn(2, 3, 32, 32)
    for over, passes in ((dict(), 2), (dict(inter=False), 2), (dict(intra=False, inter=False, scoring="rec"), 1)):
        model = create("fod", "smoke", device="cpu", weights=None, **over)
        for net, x in zip(model.net, model.features(images)):
            net.set_reference(x[0].flatten(1).T, torch.arange(x.shape[-2] * x.shape[-1]))
        out = model.training_step({"image": images})
        l2 = model.config.lambda2
        # in the forward values div_sigma == div_attn, so Eq. 8 / 10 leave only the entropy terms
        expected = passes * out["rec"] - l2 * out["ent_intra"] + l2 * out["ent_inter"]
        torch.testing.assert_close(out["loss"].detach(), expected, rtol=1e-5, atol=1e-5)


def test_paper_backbone_has_the_pretrained_weights_the_paper_used():
    """The paper's EfficientNet-B6 from timm: in the official code's timm 0.6.12, ``tf_efficientnet_b6``
    loads the AutoAugment ImageNet weights (``tf_efficientnet_b6_aa``, timm 1.x tag ``aa_in1k``);
    ``efficientnet_b6`` has none (timm's own registry, offline)."""
    import timm
    from timm.models import get_pretrained_cfg

    paper = get_config("fod", "paper")
    cfg = get_pretrained_cfg(paper.backbone)
    assert paper.weights == "timm" and cfg is not None
    assert "tf_efficientnet_b6_aa" in cfg.url or cfg.hf_hub_id == "timm/tf_efficientnet_b6.aa_in1k"
    assert not timm.list_pretrained("efficientnet_b6*")


def test_mean_reference_matches_brute_force(brick, fitted):
    feats = [torch.cat(level) for level in zip(*[fitted.features(b["image"]) for b in fitted.loader(brick.train)])]
    for net, f in zip(fitted.net, feats):
        torch.testing.assert_close(net.reference, f.mean(0).flatten(1).T, rtol=1e-5, atol=1e-5)
        assert torch.equal(net.reference_index, torch.arange(f.shape[-2] * f.shape[-1]))


def test_fit_predict_batch_independent_and_save_load(brick, fitted, tmp_path):
    assert len(fitted.train_result.losses) == fitted.config.epochs
    samples = brick.test[:5]
    res = fitted.predict(next(iter(fitted.loader(samples))))
    assert isinstance(res, AnomalyResult) and res.scores.shape == (4,) and res.maps.shape == (4, 64, 64)
    torch.testing.assert_close(res.scores, res.maps.flatten(1).amax(1))
    assert [r.shape for r in res.extras["rec"]] == [(4, 8, 8), (4, 4, 4)]
    fitted.config.batch_size = 1
    one = fitted.predict_all(samples)
    fitted.config.batch_size = 4
    four = fitted.predict_all(samples)
    torch.testing.assert_close(one["scores"], four["scores"], rtol=1e-4, atol=1e-5)
    path = fitted.save(tmp_path / "fod.pt")
    again = load_method(path, device="cpu")  # built from the checkpoint's own config
    assert again.config == fitted.config
    torch.testing.assert_close(again.predict_all(samples)["maps"], four["maps"])


def test_return_attention_extras(brick, fitted):
    batch = next(iter(fitted.loader(brick.test[:2])))
    res = fitted.predict(batch, return_attention=True)
    cfg = fitted.config
    a = res.extras["intra_attention"][0]
    assert a.shape == (2, cfg.n_layers, cfg.heads, 64, 64)
    torch.testing.assert_close(a.sum(-1), torch.ones(a.shape[:-1]))
    assert res.extras["inter_target"][1].shape == (2, cfg.n_layers, cfg.heads, 16, 16)
    assert res.extras["inter_sigma"][0].shape == (2, cfg.n_layers, cfg.heads, 64, 2)
    assert res.extras["reference_positions"][0].shape == (64, 2)
    torch.testing.assert_close(res.maps, fitted.predict(batch).maps)  # the flag does not change the result


def test_training_lowers_the_loss(fitted):
    rec = [t["rec"] for t in fitted.train_result.terms]
    assert len(rec) == 3 and rec[-1] < rec[0] and fitted.train_result.losses[-1] < fitted.train_result.losses[0]


def test_same_seed_same_scores(brick):
    a = create("fod", "smoke", device="cpu", seed=1, epochs=1).fit(brick.train[:4])
    b = create("fod", "smoke", device="cpu", seed=1, epochs=1).fit(brick.train[:4])
    assert torch.equal(a.predict_all(brick.test[:3])["scores"], b.predict_all(brick.test[:3])["scores"])


def test_coreset_reference_is_bounded_and_positioned(brick):
    model = create("fod", "smoke", device="cpu", reference="coreset", coreset_size=20, epochs=1).fit(brick.train[:4])
    for net, n in zip(model.net, (64, 16)):
        m = min(20, n * 4)
        assert net.reference.shape == (m, net.projection.out_features)
        assert int(net.reference_index.min()) >= 0 and int(net.reference_index.max()) < n
    res = model.predict(next(iter(model.loader(brick.test[:2]))), return_attention=True)
    assert res.extras["inter_attention"][0].shape[-1] == 20


def test_bench_smoke(synth_root):
    row = run_benchmark("fod", synth_root, "brick", preset="smoke")
    for key in ("image_auroc", "pixel_auroc", "aupro", "fit_s", "ms_per_image"):
        assert key in row and not math.isnan(row[key])
    assert row["pixel_auroc"] > 0.5


def test_routing_runs_the_tested_divergence_and_entropy(monkeypatch):
    """routed_terms calls symmetric_kl and row_entropy (the functions the exercises check), so a change
    to either changes what training optimises."""
    from nbhelpers.methods.fod import correlation as fod_module

    a = torch.softmax(torch.randn(2, 3, 5, 7), -1)
    t = torch.softmax(torch.randn(2, 3, 5, 7), -1)
    with torch.no_grad():
        plain = fod_module.routed_terms(a, t)
    assert torch.allclose(plain["div_attn"], fod_module.symmetric_kl(t, a).mean(1))
    assert torch.allclose(plain["entropy"], fod_module.row_entropy(a).mean(1))
    monkeypatch.setattr(fod_module, "symmetric_kl", lambda p, q, *args: torch.zeros(p.shape[:-1]))
    monkeypatch.setattr(fod_module, "row_entropy", lambda p, *args: torch.ones(p.shape[:-1]))
    swapped = fod_module.routed_terms(a.requires_grad_(), t)
    assert float(swapped["div_attn"].abs().max()) == 0 and float(swapped["div_sigma"].abs().max()) == 0
    assert torch.equal(swapped["entropy"], torch.ones(2, 5))


def test_patch_anomaly_score_is_eq_12_and_its_ablations():
    from nbhelpers.methods.fod import patch_anomaly_score

    rec, weight = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[0.0, 0.5, 1.0]])
    assert patch_anomaly_score(rec, weight).tolist() == [[0.0, 1.0, 3.0]]
    assert patch_anomaly_score(rec, weight, "rec").tolist() == rec.tolist()
    assert patch_anomaly_score(rec, weight, "div").tolist() == weight.tolist()
    with pytest.raises(ValueError, match="scoring must be one of"):
        patch_anomaly_score(rec, weight, "max")
