"""The HTML report: numbers equal the JSON records; it renders in a real headless browser with
every figure decoded and no console errors."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

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
