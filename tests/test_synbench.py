"""SynBench (Ko et al., arXiv 2210.02989): closed forms, reference values (docs/methods/synbench.md),
the closed-form robust Bayes direction against a numerical QCQP solution, encoder-level
sanity checks (identity ~ 1, scale invariance, rank-reducing projection < 1), properties, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from torch import nn

from robrep.cli import main
from robrep.data import DatasetInfo, TensorImageData
from robrep.errors import InputError
from robrep.evaluate.synbench import (
    SCALES,
    ClassStats,
    bound_correct,
    class_stats,
    expected_bound_curve,
    gaussian_robust_accuracy,
    half_class_mean_distance,
    raw_reference,
    reference_denominator,
    robust_bayes_direction,
    robust_bayes_gamma,
    robust_bayes_metrics,
    robust_linear_probe,
    synbench,
    synbench_scores,
    synbench_xgrid,
)
from robrep.models import create_model, save_model

SHAPE = (2, 4, 4)  # d = 32, the docs/methods/synbench.md encoder-level setting


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------- raw-data reference (closed form)


def test_bound_correct_reference_values():
    a = [0.6, 0.7, 0.75, 0.8, 0.9, 0.95, 0.99, 0.999]
    want = [3.54159, 1.94718, 1.62818, 1.41581, 1.15216, 1.06600, 1.01157, 1.00109]
    assert bound_correct(torch.tensor(a)).numpy() == pytest.approx(want, abs=6e-6)


@pytest.mark.parametrize("a", [0.55, 0.7, 0.93])
def test_bound_correct_is_truncated_normal_mean(a):
    # independent: E[t / s | t > 0] for t ~ N(s, 1), s = Phi^-1(a), by numerical integration
    s = stats.norm.ppf(a)
    num, _ = integrate.quad(lambda t: t / s * stats.norm.pdf(t - s), 0, np.inf)
    assert float(bound_correct(a)) == pytest.approx(num / a, rel=1e-9)


def test_raw_curve_and_denominators_reference_values():
    acc, bnd = raw_reference()
    assert acc.shape == (49,) and SCALES[0] == 0.1 and SCALES[-1] == 4.9
    e = expected_bound_curve(acc, bnd)
    assert e[[0, 10, 25, 50, 75, 99]].numpy() == pytest.approx([1.12318, 1.06078, 0.97052, 0.87229, 0.76899, 0.0], abs=6e-6)
    den = reference_denominator([0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.99])
    want = [85.83041, 71.72825, 59.62106, 47.22048, 36.42010, 26.22760, 15.91320, 7.21320, 0.98040]
    assert den.numpy() == pytest.approx(want, abs=6e-5)


def test_curve_and_score_against_literal_loops():
    g = torch.Generator().manual_seed(3)
    acc = 0.5 + 0.5 * torch.rand(2, 49, generator=g, dtype=torch.float64)
    bnd = 3 * torch.rand(2, 49, generator=g, dtype=torch.float64)
    xg = [0.6 + 0.4 * k / 99 for k in range(100)]
    ra, rb = raw_reference()

    def curve(a, b):
        return [sum(float(b[s]) for s in range(49) if float(a[s]) > x) / 49 for x in xg]

    raw = curve(ra, rb)
    thresholds = [0.6, 0.7, 0.8, 0.9]
    got = synbench_scores(acc, bnd, thresholds)
    for i in range(2):
        c = curve(acc[i], bnd[i])
        assert expected_bound_curve(acc[i], bnd[i]).numpy() == pytest.approx(c, abs=1e-12)
        for j, t in enumerate(thresholds):
            want = sum(v for x, v in zip(xg, c) if x >= t) / sum(v for x, v in zip(xg, raw) if x >= t)
            assert float(got[i, j]) == pytest.approx(want, rel=1e-12)
    assert synbench_xgrid().numpy() == pytest.approx(np.linspace(0.6, 1.0, 100), abs=1e-15)
    # the raw data score exactly 1 against themselves; a curve that dominates scores higher
    assert synbench_scores(ra, rb, thresholds).numpy() == pytest.approx([1.0] * 4, abs=1e-12)
    assert (synbench_scores(ra, rb * 1.1, thresholds) > 1).all()


def test_gaussian_robust_accuracy_values_and_monte_carlo():
    got = gaussian_robust_accuracy(torch.tensor([1.0, 1.0, 2.0, 2.0]), torch.tensor([0.0, 0.25, 0.5, 1.0]))
    assert got.numpy() == pytest.approx([0.8413, 0.7734, 0.9332, 0.8413], abs=6e-5)
    # Monte Carlo: the worst l2 perturbation of radius eps of a linear classifier w = mu moves
    # every point eps towards the boundary (d = 5, ||mu|| = 1.5, eps = 0.4)
    g = torch.Generator().manual_seed(0)
    d, s, eps, n = 5, 1.5, 0.4, 400_000
    mu = torch.full((d,), s / math.sqrt(d), dtype=torch.float64)
    y = torch.randint(0, 2, (n,), generator=g) * 2 - 1
    x = y[:, None] * mu + torch.randn(n, d, generator=g, dtype=torch.float64)
    x_adv = x - eps * y[:, None] * mu / mu.norm()
    rob = ((x_adv @ mu) * y > 0).double().mean()
    assert float(rob) == pytest.approx(float(gaussian_robust_accuracy(s, eps)), abs=4e-3)


# ---------------------------------------------------------------- the eps-robust Bayes classifier


def _random_spd(k: int, g: torch.Generator) -> torch.Tensor:
    a = torch.randn(k, k, generator=g, dtype=torch.float64)
    return a @ a.T / k + 0.05 * torch.eye(k, dtype=torch.float64)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("eps", [0.05, 0.3, 0.7])
def test_robust_direction_matches_numerical_qcqp(seed, eps):
    g = torch.Generator().manual_seed(seed)
    k = 6
    sigma = _random_spd(k, g)
    mu = torch.randn(k, generator=g, dtype=torch.float64)
    w = robust_bayes_direction(mu, sigma, eps, eig_tol=0.0)
    # test-only numerical solution of min_z (mu - z)^T Sigma^-1 (mu - z) s.t. ||z|| <= eps ||mu||:
    # accelerated projected gradient (FISTA) with the exact projection onto the l2 ball -- a generic
    # convex solver that knows nothing of the closed form (SLSQP's success flag depended on BLAS
    # threading at ftol 1e-14, so it is not used).
    s_inv, m = np.linalg.inv(sigma.numpy()), mu.numpy()
    r = eps * np.linalg.norm(m)
    lip = 2 * np.linalg.eigvalsh(s_inv).max()

    def proj(v: np.ndarray) -> np.ndarray:
        nv = np.linalg.norm(v)
        return v if nv <= r else v * (r / nv)

    z = z_prev = np.zeros(k)
    t = 1.0
    for _ in range(20_000):
        t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
        yk = z + (t - 1) / t_next * (z - z_prev)
        z_prev, z, t = z, proj(yk + 2 * s_inv @ (m - yk) / lip), t_next
    assert np.linalg.norm(z - z_prev) < 1e-12 * max(r, 1.0)  # converged
    w_num = s_inv @ (m - z)
    cos = float(w.numpy() @ w_num / np.linalg.norm(w.numpy()) / np.linalg.norm(w_num))
    assert cos >= 0.999999
    assert np.linalg.norm(w.numpy() - w_num) / np.linalg.norm(w_num) < 1e-4  # same scale as the official W_0


def test_robust_direction_limits_and_gamma_root():
    g = torch.Generator().manual_seed(5)
    sigma, mu = _random_spd(8, g), torch.randn(8, generator=g, dtype=torch.float64)
    lda = torch.linalg.solve(sigma, mu)
    assert torch.allclose(robust_bayes_direction(mu, sigma, 0.0, eig_tol=0.0), lda, atol=1e-10)
    w = robust_bayes_direction(mu, sigma, 1 - 1e-9, eig_tol=0.0)  # tiny norm (~1e-9): normalize first
    assert float(w @ mu / w.norm() / mu.norm()) > 1 - 1e-6  # eps -> 1: nearest mean
    d, f = torch.linalg.eigh(sigma)
    mt = f.T @ mu
    eps = [0.0, 0.2, 0.5, 0.9]
    gam = robust_bayes_gamma(mt, d, eps)
    assert gam[0] == 0 and (gam[1:] > 0).all() and (gam.diff() > 0).all()  # gamma increases with eps
    for e, gm in zip(eps, gam):  # the root: ||z*|| = eps ||mu||
        assert float((gm * mt / (gm + d)).norm()) == pytest.approx(e * float(mt.norm()), rel=1e-10, abs=1e-12)
    # w is proportional to (Sigma + gamma I)^-1 mu
    w = robust_bayes_direction(mu, sigma, 0.5, eig_tol=0.0)
    v = torch.linalg.solve(sigma + gam[2] * torch.eye(8, dtype=torch.float64), mu)
    assert float(torch.nn.functional.cosine_similarity(w, v, dim=0)) > 1 - 1e-12
    with pytest.raises(InputError, match=r"\[0, 1\)"):
        robust_bayes_gamma(mt, d, 1.0)


def test_class_stats_match_numpy_pooled_covariance():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(50, 4, generator=g)
    y = (torch.rand(50, generator=g) < 0.4).long()
    st = class_stats(h, y)
    a, b = h[y == 1].numpy(), h[y == 0].numpy()
    pooled = (np.cov(a, rowvar=False) * (len(a) - 1) + np.cov(b, rowvar=False) * (len(b) - 1)) / (50 - 2)
    assert st.cov.numpy() == pytest.approx(pooled, abs=1e-6)
    assert st.mean1.numpy() == pytest.approx(a.mean(0), abs=1e-6) and (st.n1, st.n0) == (len(a), len(b))
    with pytest.raises(InputError, match="at least 2"):
        class_stats(h[:3], torch.tensor([1, 0, 0]))


def test_robust_bayes_metrics_against_slow_loop():
    g = torch.Generator().manual_seed(2)
    f = torch.randn(200, 5, generator=g, dtype=torch.float64) @ torch.randn(5, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (200,), generator=g)
    f = f + 0.8 * (2 * y[:, None] - 1)
    st = class_stats(f[:120], y[:120])
    eps = [0.0, 0.3]
    acc, bnd = robust_bayes_metrics(st, f[120:], y[120:], eps)
    mu = (st.mean1 - st.mean0) / 2
    c = (st.mean1 + st.mean0) / 2
    for i, e in enumerate(eps):
        w = robust_bayes_direction(mu, st.cov, e)
        ok, bs = 0, []
        for h, t in zip(f[120:], y[120:]):
            m = float((h - c) @ w)
            if (m > 0 and t == 1) or (m < 0 and t == 0):
                ok += 1
                bs.append(abs(m) / abs(float(mu @ w)))
        assert float(acc[i]) == pytest.approx(ok / 80, abs=1e-12)
        assert float(bnd[i]) == pytest.approx(sum(bs) / len(bs), rel=1e-9)


def test_degenerate_representation_scores_zero():
    st = ClassStats(torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64),
                    torch.zeros(3, 3, dtype=torch.float64), 5, 5)
    acc, bnd = robust_bayes_metrics(st, torch.zeros(4, 3), torch.tensor([0, 1, 0, 1]), [0.0, 0.2])
    assert acc.tolist() == [0.0, 0.0] and bnd.tolist() == [0.0, 0.0]


# ---------------------------------------------------------------- encoder level (docs/methods/synbench.md item 4)


@pytest.fixture(scope="module")
def identity_result():
    return synbench(nn.Flatten(), input_shape=SHAPE, eps=(0.0, 0.2))


def test_identity_encoder_scores_about_one(identity_result):
    r = identity_result
    assert r.score.shape == (2, 4) and r.feature_dim == 32
    assert ((r.score >= 0.98) & (r.score <= 1.02)).all(), r.score
    # the identity reproduces the closed form per scale: accuracy ~ Phi(s) (binomial error)
    se = torch.sqrt(r.raw_accuracy * (1 - r.raw_accuracy) / 2048)
    assert ((r.accuracy[0] - r.raw_accuracy).abs() < 4 * se + 0.01).all()
    # and the mean bound of correct points ~ f(Phi(s)) at the scales where it is well estimated
    big = torch.tensor(r.scales) >= 1.0
    assert ((r.bound[0, big] / r.raw_bound[big] - 1).abs() < 0.08).all()


def test_scaled_identity_scores_the_same(identity_result):
    r10 = synbench(lambda x: 10 * x.flatten(1), input_shape=SHAPE, eps=(0.0, 0.2))
    assert torch.allclose(r10.score, identity_result.score, atol=1e-3)


def test_rank_reducing_projection_scores_clearly_below_one():
    p = torch.randn(32, 8, generator=torch.Generator().manual_seed(0))
    r = synbench(lambda x: x.flatten(1) @ p, input_shape=SHAPE, eps=(0.0, 0.2))
    assert r.feature_dim == 8
    assert (r.score < 0.9).all() and (r.score[:, -1] < 0.7).all()
    assert (r.score.diff(dim=1) < 0).all()  # information loss hurts more at high threshold accuracy


def test_robrep_model_path_equals_identity(identity_result):
    # the 'linear' model's penultimate layer is the normalized flattened image: an affine map
    torch.manual_seed(0)
    model = create_model("linear", num_classes=3, input_shape=SHAPE)
    r = synbench(model, eps=(0.0, 0.2))
    assert r.config["input_shape"] == list(SHAPE) and r.config["layer"] == "penultimate"
    assert torch.allclose(r.score, identity_result.score, atol=2e-3)


def test_determinism_seed_and_batch_size():
    enc = lambda x: torch.tanh(x.flatten(1))  # noqa: E731
    kw = dict(input_shape=(1, 3, 3), eps=(0.0, 0.3), scales=SCALES[::6], n_train=300, n_test=300)
    a = synbench(enc, seed=1, batch_size=256, **kw)
    b = synbench(enc, seed=1, batch_size=7, **kw)
    c = synbench(enc, seed=2, **kw)
    assert torch.equal(a.accuracy, b.accuracy) and torch.allclose(a.bound, b.bound, atol=1e-12)
    assert not torch.equal(a.accuracy, c.accuracy)


def test_unclipped_by_default_clip_option():
    seen = {}

    def enc(x):
        seen["lo"], seen["hi"] = min(seen.get("lo", 9.0), float(x.min())), max(seen.get("hi", -9.0), float(x.max()))
        return x.flatten(1)

    kw = dict(input_shape=(1, 2, 2), scales=(0.5, 4.0), n_train=64, n_test=64, thresholds=(0.6,))
    synbench(enc, **kw)
    assert seen["lo"] < -1 and seen["hi"] > 2  # N(0.5 +- mu, I) as in the paper
    seen.clear()
    synbench(enc, clip=True, **kw)
    assert seen["lo"] >= 0 and seen["hi"] <= 1


def test_result_dict_and_best_eps(identity_result):
    d = identity_result.to_dict()
    assert set(d["scores"]) == {"0.6", "0.7", "0.8", "0.9"} and set(d["scores"]["0.7"]) == {"0", "0.2"}
    assert d["scores"]["0.7"]["0.2"] == pytest.approx(float(identity_result.score[1, 1]))
    assert len(d["synbench_curve"]) == 100 and d["synbench_curve"][0][0] == pytest.approx(0.6)
    best = identity_result.best_eps(0.7)
    j = 1
    assert float(identity_result.score[identity_result.eps.index(best), j]) == float(identity_result.score[:, j].max())
    json.dumps(d)
    with pytest.raises(InputError, match="threshold"):
        identity_result.best_eps(0.75)


@pytest.mark.parametrize("kw, msg", [
    (dict(eps=(1.0,)), r"\[0, 1\)"),
    (dict(thresholds=(0.5,)), r"\[0.6, 1\)"),
    (dict(prior=1.0), "prior"),
    (dict(input_shape=None), "input_shape"),
])
def test_bad_arguments(kw, msg):
    args = dict(input_shape=SHAPE) | kw
    with pytest.raises(InputError, match=msg):
        synbench(nn.Flatten(), **args)


# ---------------------------------------------------------------- eps-robust linear probing, CLI


def _tiny_data(n: int, seed: int) -> TensorImageData:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = (0.5 + 0.15 * (2 * y - 1).view(-1, 1, 1, 1) + 0.1 * torch.randn(n, *SHAPE, generator=g)).clamp(0, 1)
    info = DatasetInfo("tiny", 2, SHAPE, (0.5, 0.5), (0.5, 0.5), ("a", "b"))
    return TensorImageData(x, y, info, "train")


def test_half_class_mean_distance_and_robust_probe():
    tr, te = _tiny_data(120, 0), _tiny_data(60, 1)
    x, y = tr.tensors()
    want = float((x[y == 1].mean(0) - x[y == 0].mean(0)).norm()) / 2
    assert half_class_mean_distance(tr) == pytest.approx(want, rel=1e-6)
    torch.manual_seed(0)
    model = create_model("linear", num_classes=2, input_shape=SHAPE)
    res = synbench(model, eps=(0.0, 0.2, 0.4), scales=SCALES[::4], n_train=128, n_test=128)
    pr = robust_linear_probe(model, tr, te, res, threshold=0.7, epochs=2, attack_steps=3, eval_steps=3)
    assert pr.synbench_eps == res.best_eps(0.7)
    assert pr.radius == pytest.approx(pr.synbench_eps * want, rel=1e-6)
    assert pr.eval_threat["eps"] == pytest.approx(pr.radius)
    pr2 = robust_linear_probe(model, tr, te, res, eps=0.5, reference_radius=2.0, epochs=2, attack_steps=3, eval_steps=3)
    assert pr2.radius == pytest.approx(1.0) and pr2.robust.train_threat["eps"] == pytest.approx(1.0)
    for p in (pr2.standard, pr2.robust):
        assert 0 <= p.adversarial_accuracy <= p.natural_accuracy <= 1


def test_cli_json_record_and_plot(tmp_path, capsys):
    torch.manual_seed(0)
    model = create_model("small-cnn", num_classes=3, input_shape=(1, 6, 6), width=2, feat_dim=4)
    ck = tmp_path / "m.safetensors"
    save_model(ck, model, {"dataset": "mnist"})
    out = tmp_path / "run"
    rc = main(["synbench", "--checkpoint", str(ck), "--eps", "0", "0.1", "0.2", "--n-train", "64", "--n-test", "64",
               "--json", "--quiet", "--out", str(out)])
    assert rc == 0
    d = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(d["scores"]) == {"0.6", "0.7", "0.8", "0.9"} and set(d["scores"]["0.6"]) == {"0", "0.1", "0.2"}
    assert all(v >= 0 for row in d["scores"].values() for v in row.values())
    rec = json.loads((out / "record.json").read_text())
    assert rec["command"] == "synbench" and len(rec["metrics"]["synbench_curve"]) == 100
    assert (out / "synbench.png").stat().st_size > 1000
    assert main(["synbench", "--checkpoint", str(ck), "--eps", "1.5", "--n-train", "8", "--n-test", "8"]) == 2


# ---------------------------------------------------------------- precision of the encoder's forward passes


def test_precision_fp32_default_and_recorded(identity_result, monkeypatch):
    from robrep import runtime

    assert identity_result.config["precision"] == "fp32" and identity_result.config["precision_ran"] == "fp32"
    monkeypatch.setattr(runtime, "bf16_supported", lambda device="cpu": False)
    r = synbench(nn.Flatten(), input_shape=SHAPE, eps=(0.0, 0.2), precision="auto")  # no native bf16: fp32
    assert r.config["precision"] == "auto" and r.config["precision_ran"] == "fp32"
    assert torch.equal(r.score, identity_result.score)
    with pytest.raises(InputError, match="native bf16"):
        synbench(nn.Flatten(), input_shape=SHAPE, eps=(0.0, 0.2), precision="bf16")


@pytest.mark.skipif(not __import__("robrep").runtime.bf16_supported("cpu"), reason="no native bf16 on this CPU")
def test_precision_auto_agrees_with_fp32():
    # bf16 features (a bf16 copy of the encoder), score in float64 from them. The 'linear' model's
    # representation is the normalized image: its score is the raw optimum, 1 (closed form).
    torch.manual_seed(0)
    lin = create_model("linear", num_classes=3, input_shape=SHAPE)
    a = synbench(lin, eps=(0.0, 0.2), precision="auto")
    f = synbench(lin, eps=(0.0, 0.2), precision="fp32")
    assert a.config["precision_ran"] == "bf16" and a.config["precision"] == "auto"
    assert ((a.score - 1).abs() <= 0.02).all(), a.score
    assert (a.score - f.score).abs().max() <= 5e-3, (a.score, f.score)  # measured 1.3e-3
    # a small CNN (nonlinear features): scores within 0.02 of float32's (measured 0.007)
    cnn = create_model("small-cnn", num_classes=10, input_shape=(1, 12, 12), width=8).eval()
    kw = dict(eps=(0.0, 0.3), scales=SCALES[::6], n_train=512, n_test=512)
    a, f = synbench(cnn, precision="auto", **kw), synbench(cnn, precision="fp32", **kw)
    assert a.config["precision_ran"] == "bf16"
    assert (a.score - f.score).abs().max() <= 0.02, (a.score, f.score)
    assert (a.accuracy - f.accuracy).abs().max() <= 0.02  # measured 2 of 512 test points
