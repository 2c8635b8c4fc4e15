"""Randomized smoothing (Cohen et al. 2019) and the hidden cost of smoothing (Mohapatra et al. 2021).

References: closed forms (Clopper-Pearson via the binomial tail, alpha^(1/n), the exact smoothed
probability of a linear classifier, chi-square / orthant formulas) computed independently here.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import binom, norm
from torch import nn

from robrep.certify import (
    ABSTAIN,
    certified_accuracy,
    certified_accuracy_curve,
    certify,
    clopper_pearson_lower,
    cohen_radius,
    predict,
)
from robrep.certify.hidden_cost import (
    ball_vanishing_threshold,
    hidden_cost,
    orthant_diagonal_boundary,
    smoothed_ball_radius,
    smoothed_boundary,
)
from robrep.certify.runner import certify_dataset, read_tsv, write_tsv
from robrep.certify.smoothing import (
    clopper_pearson_upper,
    image_generator,
    predict_from_counts,
    sample_counts,
)
from robrep.errors import InputError


class Linear2(nn.Module):
    """Two-class linear classifier: class 1 iff w . x + b >= 0 (logits [0, w.x + b])."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w, self.b = w.flatten().double(), b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1).double() @ self.w + self.b
        return torch.stack([torch.zeros_like(s), s], 1)


class Region(nn.Module):
    """Class 1 inside a region given by an indicator on flattened points."""

    def __init__(self, inside) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.inside = inside

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.inside(x.flatten(1).double()).double()
        return torch.stack([1 - s, s], 1)


# ----------------------------------------------------------------------------- Clopper-Pearson
def test_clopper_pearson_check_values() -> None:
    p = clopper_pearson_lower(100_000, 100_000, 1e-3)
    assert p == pytest.approx(0.99993092, abs=5e-9)
    assert p == pytest.approx(1e-3 ** (1 / 100_000), rel=1e-12)  # closed form when k = n
    assert norm.ppf(p) == pytest.approx(3.8115, abs=1e-4)
    for k, want, rad in [(99_000, 0.988989, 2.2900), (95_000, 0.947835, 1.6242), (90_000, 0.897036, 1.2648),
                         (60_000, 0.595201, 0.2409)]:
        q = clopper_pearson_lower(k, 100_000, 1e-3)
        assert q == pytest.approx(want, abs=1.5e-6)
        assert cohen_radius(q, 1.0) == pytest.approx(rad, abs=1e-4)
    assert cohen_radius(0.9, 0.5) == pytest.approx(0.6408, abs=1e-4)
    assert cohen_radius(0.5, 0.5) == 0.0
    assert clopper_pearson_lower(0, 10, 0.01) == 0.0


@pytest.mark.parametrize("k,n,alpha", [(7, 10, 0.05), (480, 500, 1e-3), (9_990, 10_000, 1e-3), (3, 1000, 0.01)])
def test_clopper_pearson_matches_binomial_tail(k: int, n: int, alpha: float) -> None:
    # Independent definition: the lower bound p solves P(Bin(n, p) >= k) = alpha, the upper P(Bin(n, p) <= k) = alpha.
    lo = clopper_pearson_lower(k, n, alpha)
    assert binom.sf(k - 1, n, lo) == pytest.approx(alpha, rel=1e-6)
    assert binom.sf(k - 1, n, lo * 0.999) < alpha  # it is the smallest such p
    up = clopper_pearson_upper(k, n, alpha)
    assert binom.cdf(k, n, up) == pytest.approx(alpha, rel=1e-6)
    assert lo < k / n < up


def test_clopper_pearson_bad_input() -> None:
    with pytest.raises(InputError, match="alpha"):
        clopper_pearson_lower(5, 10, 0.0)
    with pytest.raises(InputError):
        clopper_pearson_lower(11, 10, 0.01)


# ----------------------------------------------------------------------------- PREDICT
def test_predict_two_sided_binomial_test() -> None:
    res = predict_from_counts([3, 510, 490], 1e-3)
    assert res.prediction == ABSTAIN
    assert res.pvalue == pytest.approx(0.548, abs=5e-4)
    # literal two-sided p-value of a fair coin: 2 P(X >= 510), X ~ Bin(1000, 1/2)
    lit = 2 * sum(math.comb(1000, i) for i in range(510, 1001)) / 2 ** 1000
    assert res.pvalue == pytest.approx(lit, rel=1e-9)
    res = predict_from_counts([0, 400, 600], 1e-3)
    assert res.prediction == 2 and res.pvalue < 1e-9


def test_predict_linear_classifier() -> None:
    w = torch.full((1, 2, 2), 0.5)  # ||w|| = 1
    model = Linear2(w, -1.0)
    x = torch.full((1, 2, 2), 0.75)  # margin 0.5 -> p = Phi(0.5 / 0.25)
    res = predict(model, x, 0.25, 2000, 1e-3, batch_size=500, generator=image_generator(0, 0))
    assert res.prediction == 1
    x_edge = torch.full((1, 2, 2), 0.5)  # on the boundary: p = 1/2 -> abstain
    assert predict(model, x_edge, 0.25, 2000, 1e-3, generator=image_generator(0, 1)).prediction == ABSTAIN


# ----------------------------------------------------------------------------- sampling and CERTIFY
def test_sample_counts_exact_probability_and_batching() -> None:
    w = torch.tensor([[[0.6, 0.8]]])  # ||w|| = 1
    model = Linear2(w, -0.7)
    x = torch.tensor([[[0.5, 0.6]]])  # margin 0.3 + 0.48 - 0.7 = 0.08
    sigma, n = 0.2, 40_003
    c = sample_counts(model, x, sigma, n, batch_size=1000, generator=image_generator(3, 0))
    assert int(c.sum()) == n and c.dtype == torch.int64
    p = norm.cdf(0.08 / sigma)
    assert abs(float(c[1]) / n - p) < 4.5 * math.sqrt(p * (1 - p) / n)
    # determinism under a seed; another seed gives other counts
    c2 = sample_counts(model, x, sigma, n, batch_size=1000, generator=image_generator(3, 0))
    c3 = sample_counts(model, x, sigma, n, batch_size=1000, generator=image_generator(4, 0))
    assert torch.equal(c, c2) and not torch.equal(c, c3)


def test_certify_linear_converges_to_exact_radius() -> None:
    # Smoothed linear classifier: p_A = Phi(margin / (sigma ||w||)), exact radius = margin / ||w||.
    w = torch.full((1, 4, 4), 0.25)  # ||w|| = 1
    model = Linear2(w, -4.0)
    x = torch.full((1, 4, 4), 1.1)  # w.x = 4.4 -> margin 0.4
    sigma = 0.25
    exact = 0.4
    errs = []
    for n in (1_000, 10_000, 200_000):
        c = certify(model, x, sigma, 100, n, 1e-3, batch_size=5000, generator=image_generator(0, n))
        assert c.prediction == 1 and c.selected == 1
        assert c.radius == pytest.approx(sigma * norm.ppf(c.p_lower))
        assert c.radius < exact + 1e-3  # a lower confidence bound (fails with prob <= alpha)
        errs.append(exact - c.radius)
    assert errs[0] > errs[1] > errs[2] and errs[2] < 0.01


def test_certify_max_radius_and_abstain() -> None:
    const = Region(lambda z: torch.ones(z.shape[0]))
    x = torch.zeros(1, 2, 2)
    c = certify(const, x, 0.5, 10, 10_000, 1e-3, generator=image_generator(0, 0))
    assert c.count == 10_000
    assert c.radius == pytest.approx(0.5 * norm.ppf(1e-3 ** (1 / 10_000)), rel=1e-9)
    coin = Linear2(torch.tensor([[[1.0]]]), 0.0)  # p = 1/2 at x = 0
    c = certify(coin, torch.zeros(1, 1, 1), 0.5, 100, 2000, 1e-3, generator=image_generator(0, 1))
    assert c.prediction == ABSTAIN and c.radius == 0.0


def test_certified_accuracy_curve_against_loop() -> None:
    rng = np.random.default_rng(0)
    rad = rng.uniform(0, 1, 50)
    cor = rng.uniform(size=50) < 0.7
    grid = np.linspace(0, 1.1, 23)
    curve = certified_accuracy_curve(rad, cor, grid)
    for (r, acc), g in zip(curve, grid):
        lit = sum(1 for a, b in zip(rad, cor) if b and a >= g) / 50
        assert r == g and acc == pytest.approx(lit)
    accs = [a for _, a in curve]
    assert all(a >= b for a, b in zip(accs, accs[1:]))
    assert certified_accuracy(rad, cor, 0.0) == pytest.approx(cor.mean())


def test_certify_dataset_rows_and_tsv(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = Linear2(torch.full((1, 2, 2), 0.5), -1.0)
    x = torch.tensor([0.75, 0.3, 0.9]).view(3, 1, 1, 1).expand(3, 1, 2, 2).contiguous()
    y = torch.tensor([1, 0, 0])
    rows = certify_dataset(model, x, y, 0.25, n0=50, n=3000, batch_size=1000, indices=[5, 6, 7])
    assert [r["idx"] for r in rows] == [5, 6, 7]
    assert [r["correct"] for r in rows] == [1, 1, 0]
    # a row is the same as certifying that image alone with generator (seed, idx)
    alone = certify(model, x[1], 0.25, 50, 3000, batch_size=1000, generator=image_generator(0, 6))
    assert rows[1]["radius"] == alone.radius and rows[1]["predict"] == alone.prediction
    p = write_tsv(tmp_path / "c.tsv", rows)
    back = read_tsv(p)
    assert p.read_text().splitlines()[0] == "idx\tlabel\tpredict\tradius\tcorrect\ttime"
    assert [b["predict"] for b in back] == [r["predict"] for r in rows]
    assert back[0]["radius"] == pytest.approx(rows[0]["radius"], abs=1e-4)
    rows1 = certify_dataset(model, x[:1], y[:1], 0.25, order=1, n0=50, n=4000, batch_size=1000)
    assert rows1[0]["radius_cohen"] > 0 and math.isnan(rows1[0]["radiusR"])
    # rows survive a JSON round trip (nan -> null) through the summary and the TSV writer
    from robrep.certify.runner import summarize_certification as summarize
    from robrep.io.atomic import to_jsonable

    back1 = json.loads(json.dumps(to_jsonable(rows1)))
    summ = summarize(back1, 0.25, 1, 4)
    assert summ["certified_accuracy_table_cohen"]["0"] == 1.0
    assert summ["certified_accuracy_vs_radius"][0] == [0.0, 1.0]
    text = write_tsv(tmp_path / "c1.tsv", back1, ("idx", "radiusR", "radius_L1")).read_text()
    assert text.splitlines()[1].split("\t")[1] == "nan"


def test_bad_inputs() -> None:
    model = Linear2(torch.ones(1, 2, 2), 0.0)
    with pytest.raises(InputError, match="batch dimension"):
        certify(model, torch.zeros(2, 1, 2, 2), 0.25)
    with pytest.raises(InputError, match="sigma"):
        certify(model, torch.zeros(1, 2, 2), 0.0)


# ----------------------------------------------------------------------------- hidden cost: closed forms
def test_hidden_cost_closed_forms() -> None:
    for d, want in [(1, 0.6745), (2, 1.1774), (3, 1.5382), (10, 3.0564), (784, 27.988), (3072, 55.420)]:
        assert ball_vanishing_threshold(d) == pytest.approx(want, abs=6e-4)
    assert ball_vanishing_threshold(2) == pytest.approx(math.sqrt(2 * math.log(2)), rel=1e-9)  # chi2_2 median
    assert smoothed_ball_radius(1.0, 1) == pytest.approx(0.9333, abs=1e-4)
    assert smoothed_ball_radius(2.0, 1) == pytest.approx(1.9999, abs=1e-4)
    assert smoothed_ball_radius(3.0, 2) == pytest.approx(2.8247, abs=1e-4)
    assert smoothed_ball_radius(5.0, 10) == pytest.approx(3.9906, abs=1e-4)
    assert smoothed_ball_radius(0.6, 1) == 0.0
    # d = 1 independently: the half-width solves Phi(a - x) - Phi(-a - x) = 1/2
    x = smoothed_ball_radius(1.0, 1)
    assert norm.cdf(1 - x) - norm.cdf(-1 - x) == pytest.approx(0.5, abs=1e-9)
    assert orthant_diagonal_boundary(2) == pytest.approx(0.5450, abs=1e-4)
    t = orthant_diagonal_boundary(2)
    assert norm.cdf(t) ** 2 == pytest.approx(0.5, abs=1e-12)


# ----------------------------------------------------------------------------- hidden cost: the smoothing code reproduces them
def test_orthant_shrinks_with_the_smoothing_code() -> None:
    sigma = 0.5
    orthant = Region(lambda z: (z[:, 0] > 0) & (z[:, 1] > 0))
    ts = [sigma * v for v in np.arange(0.30, 0.81, 0.05)]
    b = smoothed_boundary(orthant, torch.zeros(1, 1, 2), torch.ones(1, 1, 2), 1, sigma, ts, n=40_000, seed=1)
    assert b / sigma == pytest.approx(0.5450, abs=0.02)
    # a half-space does not shrink: the boundary stays at 0
    half = Region(lambda z: z[:, 0] > 0)
    ts = [sigma * v for v in np.arange(-0.2, 0.21, 0.05)]
    b = smoothed_boundary(half, torch.zeros(1, 1, 2), torch.tensor([[[1.0, 0.0]]]), 1, sigma, ts, n=40_000, seed=2)
    assert abs(b) / sigma < 0.02


def test_interval_shrinks_and_small_balls_vanish_with_the_smoothing_code() -> None:
    sigma = 0.25
    interval = Region(lambda z: z[:, 0].abs() <= sigma)  # half-width 1 sigma
    ts = [sigma * v for v in np.arange(0.80, 1.06, 0.025)]
    b = smoothed_boundary(interval, torch.zeros(1, 1, 1), torch.ones(1, 1, 1), 0, sigma, ts, n=40_000, seed=3)
    assert b / sigma == pytest.approx(0.9333, abs=0.02)  # class 0 (outside) takes over at 0.9333 sigma
    thr = ball_vanishing_threshold(3)
    for scale, survives in [(0.9, False), (1.1, True)]:
        r = scale * thr * sigma
        ball = Region(lambda z, r=r: z.norm(dim=1) <= r)
        res = predict(ball, torch.zeros(1, 1, 3), sigma, 20_000, 1e-3, batch_size=5000, generator=image_generator(5, 0))
        assert (res.prediction == 1) == survives


def test_hidden_cost_per_class_against_exact() -> None:
    # Two classes on a linear model: class 1 iff mean pixel >= 0.5; noisy accuracy has a closed form.
    w = torch.full((1, 2, 2), 0.25)
    model = Linear2(w, -0.5)
    vals = torch.tensor([0.2, 0.45, 0.55, 0.9, 0.52])
    x = vals.view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()
    y = torch.tensor([0, 0, 1, 1, 0])
    res = hidden_cost(model, x, y, [0.1, 0.5], n=4000, batch_size=2000, seed=0)
    assert res.num_images == 5
    for cd in res.per_sigma:
        s_eff = cd.sigma * float(w.norm())  # std of w . noise
        margins = (vals - 0.5).numpy() * 1.0
        exact = np.where(y.numpy() == 1, norm.cdf(margins / s_eff), norm.cdf(-margins / s_eff))
        for c in (0, 1):
            m = y.numpy() == c
            assert cd.noisy[c] == pytest.approx(exact[m].mean(), abs=0.03)
        assert cd.clean == (2 / 3, 1.0)
        assert cd.spread["clean"] == pytest.approx(1 / 3)
        assert cd.counts == (3, 2)
    # the noisy accuracy of the misclassified-by-noise image drops with sigma
    assert res.per_sigma[1].noisy[1] < res.per_sigma[0].noisy[1]


# ----------------------------------------------------------------------------- CLI
def test_cli_certify_json_and_record(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    import robrep
    from robrep.cli import main

    torch.manual_seed(0)
    model = robrep.create_model("small-cnn", num_classes=10, input_shape=(1, 28, 28), dataset="demo")
    ck = tmp_path / "m.safetensors"
    robrep.save_model(ck, model, {"dataset": "demo"})
    out = tmp_path / "run"
    rc = main(["certify", "--checkpoint", str(ck), "--sigma", "0.25", "--num", "2", "--n", "200", "--n0", "20",
               "--batch-size", "100", "--order", "1", "--json", "--quiet", "--out", str(out)])
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    curve = res["certified_accuracy_vs_radius"]
    assert len(curve) == 101 and all(len(p) == 2 for p in curve)
    assert (out / "certify.tsv").read_text().splitlines()[0].split("\t") == [
        "idx", "label", "predict", "radius", "radiusR", "radiusG", "radiusB", "radius_L1", "radius_LInf", "radius_L2",
        "radius_cohen", "correct", "time"]
    rec = json.loads((out / "record.json").read_text())
    assert rec["metrics"]["num_images"] == 2 and (out / "certified_accuracy.png").exists()
    assert main(["certify", "--checkpoint", str(ck), "--sigma", "-1", "--quiet"]) == 2


def test_summarize_certification_union_bound_by_hand() -> None:
    """The main order-1 curve is max(first-order, Cohen) per image, each where its own prediction
    is correct; Linf uses Cohen's L2 radius / sqrt(d). Hand-made rows, numbers by hand."""
    from robrep.certify.runner import summarize_certification

    def row(label: int, pred: int, cohen_ok: bool, r_cohen: float, r_l2: float, r_l1: float, r_linf: float) -> dict:
        return {"label": label, "predict": pred, "correct_cohen": int(cohen_ok), "radius_cohen": r_cohen,
                "radius_L2": r_l2, "radius_L1": r_l1, "radius_LInf": r_linf, "radiusR": None, "radiusG": None, "radiusB": None}

    rows = [row(0, 0, True, 0.30, 0.50, 0.40, 0.05),   # both correct: best L2 0.50, L1 0.40, Linf max(0.05, 0.30/2)
            row(1, 1, False, 0.00, 0.20, 0.10, 0.01),  # only first order correct
            row(2, -1, True, 0.60, 0.00, 0.00, 0.00),  # first order abstains, Cohen certifies 0.60
            row(3, 0, False, 0.00, 0.90, 0.90, 0.90)]  # wrong everywhere
    s = summarize_certification(rows, sigma=0.25, order=1, d=4, radii=[0.0, 0.25, 0.5])
    assert s["certified_accuracy_table"] == {"0": 0.75, "0.25": 0.5, "0.5": 0.5}  # best L2: 0.5, 0.2, 0.6, wrong
    assert s["certified_accuracy_table_cohen"] == {"0": 0.5, "0.25": 0.5, "0.5": 0.25}
    assert s["certified_accuracy_table_l2_first_order"] == {"0": 0.5, "0.25": 0.25, "0.5": 0.25}
    # Linf: best = max(first-order Linf, Cohen / sqrt(4)): 0.15, 0.01, 0.30; tables at r / sqrt(d)
    assert s["certified_accuracy_table_linf_best"] == {"0": 0.75, "0.125": 0.5, "0.25": 0.25}
    assert s["smoothed_accuracy"] == 0.5 and s["smoothed_accuracy_cohen"] == 0.5 and s["abstain_rate"] == 0.25
    assert not any(k.startswith("certified_accuracy_vs_radius_radius") for k in s)  # grayscale: no channel curves
