"""PRN: prototypes (k-means, Eq. 1), fusion (Eq. 2), multi-size attention (Eq. 3), loss (Eq. 5),
training data, the method contract and the benchmark / CLI path with seen anomalies."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from nbhelpers.benchmark import run_benchmark
from nbhelpers.cli import main
from nbhelpers.data.layouts import load_split
from nbhelpers.errors import ConfigError
from nbhelpers.methods import available, create, get_config, load_method
from nbhelpers.methods.base import AnomalyResult
from nbhelpers.methods.prn import (
    KINDS,
    AnomalyGenerationDataset,
    DepthwiseSeparableDown,
    MultiScaleFusion,
    MultiScalePrototypes,
    MultiSizeSelfAttention,
    PatchAttentionHead,
    PrototypicalResidualNetwork,
    kmeans,
    msa_patch_sizes,
    nearest_prototype,
    windowed_nearest,
    patchify,
    prn_loss,
    scaled_top_k,
    top_k_score,
    unpatchify,
)


def test_registry_and_presets():
    assert "prn" in available()
    smoke, cpu, paper = (get_config("prn", p) for p in ("smoke", "cpu", "paper"))
    assert smoke.image_size == 64 and not smoke.progress and smoke.seen_anomalies > 0
    assert cpu.backbone == "efficientnet_lite0" and cpu.weights == "packaged"
    assert (paper.backbone, paper.layers, paper.bottleneck_layer, paper.image_size) == ("resnet18", (1, 2, 3), 4, 256)
    assert (paper.epochs, paper.batch_size, paper.lr, paper.weight_decay, paper.msa_depth, paper.seen_anomalies) == \
        (700, 64, 1e-4, 1e-2, 3, 10)
    assert (paper.prototype_ratio, paper.focal_alpha, paper.focal_gamma, paper.focal_weight, paper.top_k) == \
        (0.1, 0.5, 4.0, 5.0, 100)
    assert create("prn", "smoke", device="cpu", seen_anomalies=3).seen_anomalies == 3


def test_paper_architecture_on_resnet18():
    """The paper preset's network (ResNet-18 layer1-3 + layer4), random weights, at a small size."""
    model = create("prn", "paper", device="cpu", weights=None, image_size=64)
    assert model.backbone.channels == [64, 128, 256, 512] and model.feature_sizes == [(16, 16), (8, 8), (4, 4)]
    assert len(model.net.attention[0]) == 3  # N = 3 stacked MSA blocks
    model.net.prototypes.assign([torch.zeros(2, c, *s) for c, s in zip((64, 128, 256), model.feature_sizes)])
    res = model.predict({"image": torch.randn(2, 3, 64, 64)})
    assert res.maps.shape == (2, 64, 64) and res.scores.shape == (2,)


# ------------------------------------------------------------------------------------- prototypes


def _blobs(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centers = torch.tensor([[0.0, 0, 0], [6, 0, 0], [0, 6, 0], [0, 0, 6]])
    return torch.cat([c + torch.randn(40, 3, generator=g) for c in centers])


def test_kmeans_lowers_inertia_and_matches_sklearn_from_the_same_start():
    from sklearn.cluster import KMeans

    x = _blobs()
    res = kmeans(x, 4, iters=100, seed=3, chunk=7)
    assert all(b <= a + 1e-3 for a, b in zip(res.history, res.history[1:]))  # Lloyd never increases it
    assert res.inertia < res.history[0]
    start = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(3))[:4]]  # the documented init
    ref = KMeans(4, init=start.numpy(), n_init=1, max_iter=100, tol=0, algorithm="lloyd").fit(x.numpy())
    assert res.inertia == pytest.approx(ref.inertia_, rel=1e-4)
    order = lambda c: c[np.lexsort(c.T)]  # noqa: E731
    np.testing.assert_allclose(order(res.centers.numpy()), order(ref.cluster_centers_), atol=1e-4)
    brute = torch.tensor([min(range(4), key=lambda k: float((p - res.centers[k]).norm())) for p in x])
    assert torch.equal(res.labels, brute)


def test_kmeans_is_deterministic_with_a_seed():
    x = torch.randn(200, 16, generator=torch.Generator().manual_seed(1))
    a, b = kmeans(x, 10, seed=5), kmeans(x, 10, seed=5)
    assert torch.equal(a.centers, b.centers) and torch.equal(a.labels, b.labels)
    with pytest.raises(ValueError):
        kmeans(x, 0)


def test_nearest_prototype_constructed_and_brute_force():
    protos = torch.stack([torch.full((2, 3, 3), v) for v in (0.0, 1.0, 5.0)])
    feats = torch.stack([torch.full((2, 3, 3), v) for v in (0.9, 4.0, -2.0)])
    idx, dist = nearest_prototype(feats, protos)
    assert idx.tolist() == [1, 2, 0]
    torch.testing.assert_close(dist, torch.tensor([0.1, 1.0, 2.0]) * math.sqrt(18))
    g = torch.Generator().manual_seed(0)
    f, p = torch.randn(6, 4, 5, 5, generator=g), torch.randn(9, 4, 5, 5, generator=g)
    brute = [min(range(9), key=lambda k: float(((fi - p[k]) ** 2).sum())) for fi in f]
    assert nearest_prototype(f, p)[0].tolist() == brute


def test_windowed_nearest_against_loops_and_on_a_shifted_object():
    g = torch.Generator().manual_seed(0)
    feats, protos = torch.randn(2, 3, 5, 6, generator=g), torch.randn(4, 3, 5, 6, generator=g)
    for r in (0, 1, 2):
        got = windowed_nearest(feats, protos, r)
        for b in range(2):
            for y in range(5):
                for x in range(6):
                    cands = [protos[k, :, yy, xx] for k in range(4) for yy in range(max(0, y - r), min(5, y + r + 1))
                             for xx in range(max(0, x - r), min(6, x + r + 1))]
                    best = min(cands, key=lambda v: float((feats[b, :, y, x] - v).norm()))
                    torch.testing.assert_close(got[b, :, y, x], best)
    # an object shifted by one cell: Eq. 1's whole-map residual is large, the windowed one vanishes
    mp = MultiScalePrototypes(1, window=1)
    mp.assign([protos])
    shifted = torch.roll(protos[2:3], 1, dims=3)
    windowed = mp([shifted])[0][0][..., 1:]
    whole = MultiScalePrototypes(1)
    whole.assign([protos])
    assert float(windowed.abs().max()) < 1e-5 and float(whole([shifted])[0][0][..., 1:].abs().mean()) > 0.5


def test_multi_scale_prototypes_residuals_pick_per_scale():
    mp = MultiScalePrototypes(2)
    mp.assign([torch.stack([torch.zeros(2, 4, 4), torch.ones(2, 4, 4)]),
               torch.stack([torch.zeros(3, 2, 2), torch.full((3, 2, 2), 2.0), torch.full((3, 2, 2), 4.0)])])
    f0, f1 = torch.full((1, 2, 4, 4), 0.2), torch.full((1, 3, 2, 2), 3.9)
    f0[0, 0, 1, 1] = 3.0
    residuals, index = mp([f0, f1])
    assert index.tolist() == [[0, 2]]  # scale 0 matches prototype 0, scale 1 prototype 2
    torch.testing.assert_close(residuals[0], (f0 - 0).abs())
    torch.testing.assert_close(residuals[1], torch.full((1, 3, 2, 2), 0.1))
    # fit: K = 10 % of N, frozen maps of the right shape; ratio 1 keeps every map
    feats = [torch.randn(20, 2, 4, 4), torch.randn(20, 3, 2, 2)]
    results = mp.fit(feats, ratio=0.1, iters=10)
    assert [p.shape for p in mp.prototypes] == [(2, 2, 4, 4), (2, 3, 2, 2)] and results[0].inertia > 0
    mp.fit(feats, ratio=1.0)
    assert torch.equal(mp.prototypes[0], feats[0])
    with pytest.raises(RuntimeError, match="fit"):
        MultiScalePrototypes(1)([f0])


# ----------------------------------------------------------------------------------- fusion, MSA


def test_multi_scale_fusion_shapes_and_eq2():
    channels, reductions = (4, 6, 8), (4, 8, 16)
    mf = MultiScaleFusion(channels, reductions)
    xs = [torch.randn(2, c, s, s) for c, s in zip(channels, (16, 8, 4))]
    out = mf(xs)
    assert [o.shape for o in out] == [x.shape for x in xs]
    down = mf.transforms[0][2]
    assert isinstance(down, DepthwiseSeparableDown)
    assert (down.depthwise.kernel_size, down.depthwise.stride, down.depthwise.padding, down.depthwise.groups) == \
        ((5, 5), (4, 4), (2, 2), 4)  # stride 2^(j-r), kernel 2^(j-r)+1, padding 2^(j-r-1)
    # Eq. 2: output j = x_j + sum_r f_rj(x_r)
    expected = xs[1] + mf.transforms[0][1](xs[0]) + mf.transforms[2][1](xs[2], (8, 8))
    torch.testing.assert_close(out[1], expected)


def test_patchify_order_and_roundtrip():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).view(2, 3, 4, 6)
    p = patchify(x, 2, 3)
    assert p.shape == (2, 4, 18)
    torch.testing.assert_close(p[1, 3], x[1, :, 2:4, 3:6].reshape(-1))  # patch (1, 1), C-major vector
    torch.testing.assert_close(unpatchify(p, 3, 4, 6, 2, 3), x)


@pytest.mark.parametrize("divisors,size", [((1, 2, 4, 8), (16, 16)), ((1, 2, 4, 8), (4, 4)), ((1, 2), (6, 6))])
def test_msa_shapes_for_every_patch_size(divisors, size):
    c = 5
    msa = MultiSizeSelfAttention(c, size, divisors)
    x = torch.randn(2, c, *size)
    out, attns = msa(x)
    assert out.shape == x.shape
    sizes = msa_patch_sizes(size, divisors)
    assert len(attns) == len(sizes) == len(msa.heads)
    for (ph, pw), a in zip(sizes, attns):
        n = (size[0] // ph) * (size[1] // pw)
        assert a.shape == (2, n, n)
        torch.testing.assert_close(a.sum(-1), torch.ones(2, n))  # rows of a softmax sum to 1


def test_attention_head_matches_a_loop_over_patches():
    torch.manual_seed(0)
    c, h, p = 3, 8, 4
    head = PatchAttentionHead(c, (h, h), (p, p))
    x = torch.randn(1, c, h, h)
    with torch.no_grad():
        out, attn = head(x)
        q, k, v = head.query(x)[0], head.key(x)[0], head.value(x)[0]
    cells = [(i, j) for i in range(h // p) for j in range(h // p)]
    vec = lambda t, i, j: t[:, i * p:(i + 1) * p, j * p:(j + 1) * p].reshape(-1)  # noqa: E731
    logits = torch.tensor([[float(vec(q, *a) @ vec(k, *b)) / (c * p * p) for b in cells] for a in cells])
    torch.testing.assert_close(attn[0], torch.softmax(logits, -1), rtol=1e-4, atol=1e-5)
    first = sum(attn[0, 0, n] * vec(v, *cells[n]) for n in range(len(cells)))
    torch.testing.assert_close(out[0, :, :p, :p].reshape(-1), first, rtol=1e-4, atol=1e-5)
    whole = PatchAttentionHead(c, (h, h), (h, h))  # one patch: attention is 1, the output is V
    assert whole.query is None
    torch.testing.assert_close(whole(x)[0], whole.value(x))


@pytest.mark.parametrize("scale", ["dim", "sqrt_dim"])
def test_patch_embedding_head_matches_a_loop_over_patches(scale):
    """embedding="patch": each token is the p x p depthwise conv of its patch (every pixel, its own
    weight per channel) followed by the 1x1 conv; logits scaled by 1/d or 1/sqrt(d), d = C."""
    torch.manual_seed(0)
    c, h, p = 3, 8, 4
    head = PatchAttentionHead(c, (h, h), (p, p), embedding="patch", scale=scale)
    x = torch.randn(1, c, h, h)
    with torch.no_grad():
        out, attn = head(x)
        v = head.value(x)[0]

        def token(conv, i, j):
            depthwise, pointwise = conv[0], conv[1]
            patch = x[0, :, i * p:(i + 1) * p, j * p:(j + 1) * p]
            mixed = torch.stack([(depthwise.weight[ch, 0] * patch[ch]).sum() + depthwise.bias[ch] for ch in range(c)])
            return pointwise.weight[:, :, 0, 0] @ mixed + pointwise.bias

        cells = [(i, j) for i in range(h // p) for j in range(h // p)]
        d = c if scale == "dim" else math.sqrt(c)
        logits = torch.tensor([[float(token(head.query, *a) @ token(head.key, *b)) / d for b in cells] for a in cells])
    torch.testing.assert_close(attn[0], torch.softmax(logits, -1), rtol=1e-4, atol=1e-5)
    vec = lambda t, i, j: t[:, i * p:(i + 1) * p, j * p:(j + 1) * p].reshape(-1)  # noqa: E731
    first = sum(attn[0, 0, n] * vec(v, *cells[n]) for n in range(len(cells)))
    torch.testing.assert_close(out[0, :, :p, :p].reshape(-1), first, rtol=1e-4, atol=1e-5)
    # the scale of the pointwise head follows the same switch: 1 / sqrt(C p^2)
    assert PatchAttentionHead(c, (h, h), (p, p), scale="sqrt_dim").scale == pytest.approx((c * p * p) ** -0.5)
    with pytest.raises(ConfigError, match="msa_embedding"):
        get_config("prn", "smoke", msa_embedding="fc")


def test_msa_patch_sizes_errors():
    assert msa_patch_sizes((64, 64), (1, 2, 4, 8)) == [(64, 64), (32, 32), (16, 16), (8, 8)]
    with pytest.raises(ConfigError, match="divisible"):
        msa_patch_sizes((10, 10), (1, 3))


# ------------------------------------------------------------------------------------ loss, score


def test_loss_on_hand_computed_pixels():
    logits = torch.tensor([0.0, math.log(3.0)]).view(1, 1, 1, 2)  # p = 0.5, 0.75
    mask = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    out = prn_loss(logits, mask, alpha=0.5, gamma=4.0, weight=5.0)
    sl1 = (0.5 * 0.5 ** 2 + 0.5 * 0.75 ** 2) / 2                    # |d| < 1: 0.5 d^2
    focal = (0.5 * 0.5 ** 4 * math.log(2) + 0.5 * 0.75 ** 4 * math.log(4)) / 2   # -a (1-p_t)^g log p_t
    assert float(out["smooth_l1"]) == pytest.approx(sl1, rel=1e-5)
    assert float(out["focal"]) == pytest.approx(focal, rel=1e-4)
    assert float(out["loss"]) == pytest.approx(sl1 + 5 * focal, rel=1e-4)


def test_top_k_score():
    maps = torch.tensor([[[0.1, 0.9], [0.5, 0.3]]])
    assert float(top_k_score(maps, 2)) == pytest.approx(0.7)
    assert float(top_k_score(maps, 10)) == pytest.approx(0.45)
    assert scaled_top_k(100, 256, 256) == 100 and scaled_top_k(100, 64, 64) == 6 and scaled_top_k(100, 8, 8) == 1


# ---------------------------------------------------------------------------------------- network


def _network(**switches) -> PrototypicalResidualNetwork:
    channels, sizes = (4, 6, 8), [(16, 16), (8, 8), (4, 4)]
    net = PrototypicalResidualNetwork(channels, (4, 8, 16), sizes, 10, msa_depth=2, **switches)
    if net.prototypes is not None:
        g = torch.Generator().manual_seed(0)
        net.prototypes.assign([torch.randn(3, c, *s, generator=g) for c, s in zip(channels, sizes)])
    return net


def _features(batch: int = 2) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(batch, c, s, s, generator=g) for c, s in ((4, 16), (6, 8), (8, 4), (10, 2))]


def test_gradients_reach_every_module():
    net = _network()
    logits = net(_features(), (64, 64))
    assert logits.shape == (2, 1, 64, 64)
    prn_loss(logits, (torch.rand(2, 1, 64, 64) > 0.8).float())["loss"].backward()
    for name, module in net.named_modules():
        params = list(module.parameters(recurse=False))
        if params:
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params), name
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("switches", [dict(use_prototypes=False, use_msa=False, use_fusion=False),
                                      dict(use_msa=False, use_fusion=False), dict(use_prototypes=False),
                                      dict(use_fusion=False)])
def test_table4_ablation_variants_run(switches):
    net = _network(**switches)
    logits, info = net(_features(), (32, 32), details=True)
    assert logits.shape == (2, 1, 32, 32)
    assert ("prototype_index" in info) == switches.get("use_prototypes", True)
    assert bool(info["attention"]) == switches.get("use_msa", True)


# ------------------------------------------------------------------------------------ method, data


@pytest.fixture(scope="module")
def brick(synth_root):
    split = load_split(synth_root, "brick")
    seen = [s for s in split.test if s.label == 1][:2]
    return split, seen


def test_training_groups(brick):
    split, seen = brick
    model = create("prn", "smoke", device="cpu")
    data = model.training_set(split.train, seen)
    assert len(data) == math.ceil(len(split.train) / 2)
    item = data[0]
    assert item["image"].shape == (4, 3, 64, 64) and item["mask"].shape == (4, 1, 64, 64)
    assert item["kind"][:3].tolist() == [0, 0, KINDS.index("extended")]
    assert KINDS[int(item["kind"][3])] in ("heterologous", "homologous")
    assert item["mask"][:2].sum() == 0 and (item["mask"][2:].flatten(1).sum(1) > 0).all()
    torch.testing.assert_close(data[0]["image"], item["image"])  # same (seed, epoch, index): same group
    data.set_epoch(1)
    assert not torch.equal(data[0]["image"][2:], item["image"][2:])
    no_seen = AnomalyGenerationDataset(data.normals, [], None, None)
    assert KINDS[int(no_seen[0]["kind"][2])] in ("heterologous", "homologous")


def test_fit_predict_save_load(brick, tmp_path):
    split, seen = brick
    model = create("prn", "smoke", device="cpu").fit(split.train, anomalies=seen)
    assert len(model.train_result.losses) == model.config.epochs and all(math.isfinite(v) for v in model.train_result.losses)
    assert [p.shape[0] for p in model.net.prototypes.prototypes] == [1, 1, 1]  # 10 % of 8 images
    batch = next(iter(model.loader(split.test[:3])))
    res = model.predict(batch)
    assert isinstance(res, AnomalyResult)
    assert res.scores.shape == (3,) and res.maps.shape == (3, 64, 64)
    assert 0 <= float(res.maps.min()) and float(res.maps.max()) <= 1
    torch.testing.assert_close(res.scores, top_k_score(res.maps, 6))
    assert res.extras["prototype_index"].shape == (3, 3)
    assert [m.shape for m in res.extras["residual_maps"]] == [(3, 16, 16), (3, 8, 8), (3, 4, 4)]
    assert len(res.extras["attention"]) == 3 and res.extras["attention"][0][3].shape == (3, 64, 64)
    path = model.save(tmp_path / "prn.pt")
    again = load_method(path, device="cpu")  # built from the checkpoint's own config
    torch.testing.assert_close(again.predict(batch).maps, res.maps)


def test_same_seed_same_scores_and_no_seen_anomalies(brick):
    split, _ = brick
    a = create("prn", "smoke", device="cpu", epochs=1, seed=3).fit(split.train)
    b = create("prn", "smoke", device="cpu", epochs=1, seed=3).fit(split.train)
    batch = next(iter(a.loader(split.test[:4])))
    torch.testing.assert_close(a.predict(batch).scores, b.predict(batch).scores)


@pytest.mark.parametrize("msa", [dict(), dict(msa_embedding="patch", msa_scale="sqrt_dim", prototype_window=1)])
def test_short_training_lowers_the_loss(brick, msa):
    split, seen = brick
    model = create("prn", "smoke", device="cpu", **msa)
    model.fit_prototypes(split.train)
    data = model.training_set(split.train, seen)
    batch = {k: data[0][k][None] for k in ("image", "mask")}  # one group: 2 normal, 1 EA, 1 SA
    opt = torch.optim.Adam(model.net.parameters(), lr=3e-3)
    model.net.train()
    losses = []
    for _ in range(12):
        loss = model.training_step(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0]
    head = model.net.attention[0][0].heads[1]  # a multi-patch head: its Q/K embedding was trained
    assert head.query is not None and all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.query.parameters())


def test_bench_and_cli_hold_out_seen_anomalies(synth_root, tmp_path, capsys):
    row = run_benchmark("prn", synth_root, "brick", preset="smoke", seen_anomalies=1)
    assert row["n_seen_anomalies"] == 1
    for key in ("image_auroc", "pixel_auroc", "aupro", "pixel_ap", "fit_s", "ms_per_image"):
        assert key in row and not math.isnan(row[key])
    code = main(["bench", "--method", "prn", "--data", str(synth_root), "--category", "brick", "--preset", "smoke",
                 "--seen-anomalies", "2", "--out", str(tmp_path)])
    assert code == 0 and "brick" in capsys.readouterr().out
    assert json.loads((tmp_path / "results.json").read_text())[0]["n_seen_anomalies"] == 2
