"""The HTML report: numbers equal the JSON records; it renders in a real headless browser with
every figure decoded and no console errors."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import torch

from robrep.report.html import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _fake_run(d, name, acc, with_png=True):
    import torch

    from robrep.report import save_image_grid
    from robrep.runs import write_record

    r = d / name
    r.mkdir()
    write_record(r, "test", {"x": 1}, {"clean_accuracy": acc, "robust_accuracy": acc / 2,
                                        "robust_accuracy_vs_eps": [[0, acc], [0.1, acc / 2], [0.2, acc / 4]]})
    if with_png:
        save_image_grid([torch.rand(4, 1, 8, 8)], r / "grid.png")
    return r


def render(html_path, tmp_path) -> tuple[str, str]:
    """(DOM after load, browser log) from headless Chromium."""
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'chrome-profile'}", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=5000", "--dump-dom", html_path.resolve().as_uri()],
        capture_output=True, text=True, timeout=120)
    return proc.stdout, proc.stderr


def console_problems(log: str) -> list[str]:
    return [ln for ln in log.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]


def test_report_numbers_equal_records(tmp_path) -> None:
    runs = [_fake_run(tmp_path, "a", 0.91234), _fake_run(tmp_path, "b", 0.5)]
    html = write_report(runs, tmp_path / "r.html").read_text()
    for r in runs:
        m = json.loads((r / "record.json").read_text())["metrics"]
        assert f"{m['clean_accuracy']:.4f}" in html and f"{m['robust_accuracy']:.4f}" in html
    cells = re.findall(r"data-key='clean_accuracy'>([0-9.]+)<", html)
    assert cells == ["0.9123", "0.5000"]
    assert html.count("<img class='figure'") == 3  # one curve + two grids


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (CI installs it)")
def test_report_renders_in_headless_chromium(tmp_path) -> None:
    runs = [_fake_run(tmp_path, "a", 0.9), _fake_run(tmp_path, "b", 0.6)]
    path = write_report(runs, tmp_path / "r.html")
    dom, log = render(path, tmp_path)
    m = re.search(r'id="figure-status" data-total="(\d+)" data-loaded="(\d+)"', dom)
    assert m, dom[-500:]
    assert int(m.group(1)) == 3 and m.group(1) == m.group(2)
    assert console_problems(log) == []


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (CI installs it)")
def test_browser_check_detects_errors_and_broken_figures(tmp_path) -> None:
    """Negative control: the same checks fail on a page with a script error and a broken image."""
    run = _fake_run(tmp_path, "a", 0.9, with_png=False)
    path = write_report([run], tmp_path / "r.html")
    bad = path.read_text().replace("</body>", "<img class='figure' src='data:image/png;base64,AAAA'><script>undefinedFunction()</script></body>")
    path.write_text(bad)
    dom, log = render(path, tmp_path)
    m = re.search(r'id="figure-status" data-total="(\d+)" data-loaded="(\d+)"', dom)
    assert m and int(m.group(2)) < int(m.group(1))
    assert console_problems(log) != []


def test_report_notes_help_reference_curves_and_grouped_figures(tmp_path) -> None:
    """Notes are escaped text; known metrics get their meaning; a reference curve is drawn into its
    figure (not a figure of its own); the same picture of each run sits under one heading."""
    runs = [_fake_run(tmp_path, "a", 0.9), _fake_run(tmp_path, "b", 0.6)]
    for r in runs:
        (r / "extra.json").write_text(json.dumps({"synbench_curve": [[0.6, 1.0], [0.8, 0.5], [1.0, 0.0]],
                                                  "synbench_curve_raw": [[0.6, 1.2], [0.8, 0.9], [1.0, 0.0]]}))
    html = write_report(runs, tmp_path / "r.html", notes=["eps <b>0.1</b> & more"]).read_text()
    assert "eps &lt;b&gt;0.1&lt;/b&gt; &amp; more" in html and "<b>0.1</b>" not in html
    assert "test accuracy under the PGD attack" in html
    assert html.count("<img class='figure'") == 4  # robust-accuracy curve, SynBench curve (with its reference), 2 grids
    assert "alt='synbench_curve_raw'" not in html
    assert html.count("<h3>grid</h3>") == 1 and "alt='a: grid'" in html and "alt='b: grid'" in html


# --------------------------------------------------------------------------- the demo's report

DEMO_CURVES = ("robust_accuracy_vs_eps", "certified_accuracy_vs_radius", "synbench_curve", "vulnerability_per_layer")
DEMO_PICTURES = ("attack_grid", "brittleness", "inversion", "interpolation", "features", "saliency")
NEW_METRICS = ("mi_clean", "mi_worst", "vulnerability", "vulnerability_low", "vulnerability_high", "accuracy_bound",
               "synbench_score", "synbench_robust_score", "probe_natural_accuracy", "probe_adversarial_accuracy",
               "smoothed_accuracy", "certified_accuracy_r0.25", "abstain_rate", "brittleness_rep_error",
               "brittleness_rep_error_before", "inversion_rep_error", "inversion_ssim")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from robrep.demo import run_demo

    res = run_demo(tmp_path_factory.mktemp("demo") / "out", fast=True, show_progress=False)
    metrics = {n: json.loads((res.out / n / "metrics.json").read_text()) for n in ("standard", "robust")}
    return res, metrics


def _table(html: str) -> dict[str, list[str]]:
    """The comparison table as {metric: [cell of each run]} (a real HTML parser, not a regex)."""
    from html.parser import HTMLParser

    class P(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.rows: list[list[tuple[dict[str, str | None], str]]] = []
            self.in_table = self.in_cell = False
            self.attrs: dict[str, str | None] = {}

        def handle_starttag(self, tag, attrs):  # type: ignore[no-untyped-def]
            if tag == "table" and dict(attrs).get("id") == "comparison":
                self.in_table = True
            elif self.in_table and tag == "tr":
                self.rows.append([])
            elif self.in_table and tag in ("td", "th"):
                self.in_cell, self.attrs = True, dict(attrs)
                self.rows[-1].append((self.attrs, ""))

        def handle_endtag(self, tag):  # type: ignore[no-untyped-def]
            if tag == "table":
                self.in_table = False
            elif tag in ("td", "th"):
                self.in_cell = False

        def handle_data(self, data):  # type: ignore[no-untyped-def]
            if self.in_table and self.in_cell:
                a, t = self.rows[-1][-1]
                self.rows[-1][-1] = (a, t + data)

    p = P()
    p.feed(html)
    header = [t for _, t in p.rows[0]]
    assert header[1:3] == ["standard", "robust"], header
    out = {}
    for row in p.rows[1:]:
        key = row[0][1]
        assert all(a.get("data-key") == key for a, _ in row[1:3])
        out[key] = [t for _, t in row[1:3]]
    return out


def test_demo_report_numbers_equal_json_records(demo) -> None:
    res, metrics = demo
    table = _table(res.report.read_text())
    for j, name in enumerate(("standard", "robust")):
        m = metrics[name]
        rec = json.loads((res.out / name / "record.json").read_text())
        assert rec["metrics"] == m  # the record holds the same metrics as metrics.json
        assert json.loads((res.out / "summary.json").read_text())["models"][name] == m
        for k in NEW_METRICS:
            assert k in m, k
        scalars = {k: v for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        assert set(NEW_METRICS) <= set(scalars)
        for k, v in scalars.items():
            assert k in table, k
            cell = table[k][j]
            assert cell == (f"{v:.4f}" if isinstance(v, float) else str(v)), (k, cell, v)
            assert abs(float(cell) - v) <= 5e-5
    # the terminal table shows the same numbers (3 decimals)
    for name in ("standard", "robust"):
        line = next(ln for ln in res.table.splitlines() if ln.startswith(name))
        for k in ("clean_accuracy", "robust_accuracy", "vulnerability", "accuracy_bound", "synbench_score",
                  "probe_natural_accuracy", "probe_adversarial_accuracy", "certified_accuracy_r0.25"):
            assert f"{metrics[name][k]:.3f}" in line.split(), (name, k)


def test_demo_metrics_valid_and_consistent(demo) -> None:
    import math

    from robrep.certify.runner import read_tsv
    from robrep.demo import CERT_RADII, DEMO_EPS, FAST
    from robrep.evaluate.synbench import (
        expected_bound_curve,
        raw_reference,
        synbench_scores,
        synbench_xgrid,
    )
    from robrep.info import accuracy_bound

    res, metrics = demo
    for name, m in metrics.items():
        for k in ("clean_accuracy", "robust_accuracy", "probe_natural_accuracy", "probe_adversarial_accuracy",
                  "smoothed_accuracy", "certified_accuracy_r0.25", "abstain_rate", "accuracy_bound"):
            assert 0.0 <= m[k] <= 1.0, (name, k, m[k])
        # only correctly classified points are attacked: robust <= clean, for the model and its probe
        assert m["robust_accuracy"] <= m["clean_accuracy"]
        assert m["probe_adversarial_accuracy"] <= m["probe_natural_accuracy"]
        curve = m["robust_accuracy_vs_eps"]
        assert curve[0] == [0.0, m["clean_accuracy"]]
        assert [e for e, _ in curve] == sorted(e for e, _ in curve)
        assert dict((e, a) for e, a in curve)[DEMO_EPS] == m["robust_accuracy"]
        assert all(b <= a + 0.02 for (_, a), (_, b) in zip(curve, curve[1:]))  # PGD runs per eps are independent
        # vulnerability = clean - worst MI (paired critics), inside its interval; Fano bound from mi_worst
        for k in ("mi_clean", "mi_worst", "vulnerability", "vulnerability_low", "vulnerability_high"):
            assert math.isfinite(m[k])
        assert m["vulnerability"] == pytest.approx(m["mi_clean"] - m["mi_worst"], abs=1e-9)
        assert m["vulnerability_low"] <= m["vulnerability"] <= m["vulnerability_high"]
        assert m["accuracy_bound"] == pytest.approx(accuracy_bound(m["mi_worst"], 10), abs=1e-12)
        layers = dict(m["vulnerability_per_layer"])
        assert list(layers) == list(FAST.mi_layers) and layers["penultimate"] == m["vulnerability"]
        # certified accuracy: the curve is recomputed from the per-image TSV, non-increasing, 0 beyond the max radius
        rows = read_tsv(res.out / name / "certify.tsv")
        cert = m["details"]["certification"]
        assert len(rows) == FAST.cert_n == cert["n"] and cert["noise_trained"] is False
        assert all(r["radius"] <= cert["max_certifiable_radius"] + 1e-9 for r in rows)
        cc = m["certified_accuracy_vs_radius"]
        assert [r for r, _ in cc] == list(CERT_RADII)
        for r, a in cc:
            assert a == pytest.approx(sum(row["correct"] == 1 and row["radius"] >= r for row in rows) / len(rows))
        assert all(b <= a for (_, a), (_, b) in zip(cc, cc[1:]))
        assert cc[0][1] == m["smoothed_accuracy"] and dict(cc)[0.25] == m["certified_accuracy_r0.25"]
        assert all(a == 0 for r, a in cc if r > cert["max_certifiable_radius"])
        assert m["abstain_rate"] == pytest.approx(sum(row["predict"] == -1 for row in rows) / len(rows))
        # SynBench: the score recomputed from the recorded per-scale accuracy/bound; curves well formed
        sb = m["details"]["synbench"]
        assert sb["scales"] == list(FAST.synbench_scales)
        acc = torch.tensor(sb["accuracy"]["0"], dtype=torch.float64)
        bnd = torch.tensor(sb["bound"]["0"], dtype=torch.float64)
        assert float(synbench_scores(acc, bnd, [0.7], sb["scales"])[0]) == pytest.approx(m["synbench_score"], rel=1e-12)
        assert sb["scores"]["0.7"]["0.2"] == m["synbench_robust_score"]
        assert 0 < m["synbench_score"] and math.isfinite(m["synbench_robust_score"])
        ys = [v for _, v in m["synbench_curve"]]
        assert all(b <= a + 1e-12 for a, b in zip(ys, ys[1:]))  # E(a) counts the scales whose accuracy exceeds a
        raw = expected_bound_curve(*raw_reference(sb["scales"]), synbench_xgrid())
        assert [v for _, v in m["synbench_curve_raw"]] == pytest.approx(raw.tolist(), rel=1e-12)
        # pictures' numbers
        assert m["brittleness_rep_error"] >= 0 and m["brittleness_rep_error_before"] > 0 and m["inversion_rep_error"] >= 0
        assert -1.0 <= m["inversion_ssim"] <= 1.0
        for stem in DEMO_PICTURES:
            assert (res.out / name / f"{stem}.png").stat().st_size > 0
        rec = json.loads((res.out / name / "record.json").read_text())
        assert rec["demo"]["fast"] is True and rec["demo"]["sizes"]["cert_n"] == FAST.cert_n


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (CI installs it)")
def test_demo_report_renders_every_figure_in_headless_chromium(demo, tmp_path) -> None:
    res, _ = demo
    html = res.report.read_text()
    assert "http://" not in html and "https://" not in html  # self-contained: nothing to fetch
    dom, log = render(res.report, tmp_path)
    m = re.search(r'id="figure-status" data-total="(\d+)" data-loaded="(\d+)" data-broken="([^"]*)"', dom)
    assert m, dom[-500:]
    alts = re.findall(r'<img class="figure" alt="([^"]+)"', dom)
    expected = set(DEMO_CURVES) | {f"{n}: {p}" for n in ("standard", "robust") for p in DEMO_PICTURES}
    assert set(alts) == expected, set(alts) ^ expected
    assert int(m.group(1)) == len(expected) == int(m.group(2)) and m.group(3) == "", m.group(0)
    assert console_problems(log) == []


def test_training_run_report_shows_per_epoch_curves(tmp_path) -> None:
    """A training run's record.json history (as robrep train writes it) becomes per-epoch curves:
    loss, accuracies (train, test clean, test robust) and lr, with the recorded values."""
    from robrep.report.html import collect_run
    from robrep.runs import write_record

    hist = [{"epoch": e, "lr": 0.1 / e, "epoch_seconds": 1.0, "train_loss": 2.0 / e, "train_acc": 0.3 * e,
             "test_clean_accuracy": 0.25 * e, "test_robust_accuracy": 0.1 * e} for e in (1, 2, 3)]
    r = tmp_path / "train-run"
    r.mkdir()
    write_record(r, "train", {"epochs": 3}, hist[-1], history=hist)
    info = collect_run(r)
    assert info["curves"]["history:train_loss"] == [[1.0, 2.0], [2.0, 1.0], [3.0, 2.0 / 3]]
    assert info["curves"]["history:test_robust_accuracy"] == [[float(e), 0.1 * e] for e in (1, 2, 3)]
    assert "history:epoch_seconds" not in info["curves"] and "history:epoch" not in info["curves"]
    html = write_report([r], tmp_path / "r.html").read_text()
    for alt in ("training_loss", "training_accuracy", "training_lr"):
        assert f"alt='{alt}'" in html
    assert "alt='training_other'" not in html and "<h2>Training curves</h2>" in html
    # the last epoch's scalars are still in the table
    assert re.findall(r"data-key='train_loss'>([0-9.]+)<", html) == [f"{2.0 / 3:.4f}"]
    # a run without history draws no training curves
    assert "Training curves" not in write_report([_fake_run(tmp_path, "plain", 0.5)], tmp_path / "p.html").read_text()


def test_demo_models_side_by_side_equal_one_after_the_other(tmp_path) -> None:
    """``jobs=2`` (what ``robrep demo`` does on two free CPUs) runs each model in its own process
    with one thread; with one thread in this process too, every number is the same."""
    from dataclasses import replace

    import torch

    from robrep.demo import FAST, run_demo

    sizes = replace(FAST, epochs=1, synbench_n=128, cert_n=10, vis_steps=10, feature_steps=10, brittle_steps=5)
    threads = torch.get_num_threads()
    try:
        one = run_demo(tmp_path / "one", sizes=sizes, fast=True, show_progress=False, threads=1, jobs=1)
        two = run_demo(tmp_path / "two", sizes=sizes, fast=True, show_progress=False, threads=1, jobs=2)
    finally:
        torch.set_num_threads(threads)
    assert two.summary["jobs"]["processes"] == 2 and one.summary["jobs"]["processes"] == 1
    for name in ("standard", "robust"):
        a, b = one.summary["models"][name], two.summary["models"][name]
        for k in ("clean_accuracy", "robust_accuracy", "vulnerability", "synbench_score", "probe_adversarial_accuracy",
                  "certified_accuracy_r0.25"):
            assert a[k] == b[k], (name, k, a[k], b[k])
