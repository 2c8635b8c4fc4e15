"""PGD against an independent implementation (torchattacks): the same iterates when started alike,
and at least the same strength with random starts. tests/attack_reference.py only proves that
the optimised code did not change; these checks prove that it computes PGD."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import robrep
from robrep.attacks import pgd

torchattacks = pytest.importorskip("torchattacks")


def _conv_model() -> nn.Module:
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, stride=2), nn.ReLU(),
                        nn.Flatten(), nn.Linear(6 * 3 * 3, 4)).eval()
    for p in net.parameters():
        p.data.mul_(2.0)
    return net


@pytest.mark.parametrize("norm,eps,alpha", [("linf", 0.1, 0.02), ("l2", 0.8, 0.15)])
def test_pgd_iterates_equal_torchattacks(norm: str, eps: float, alpha: float) -> None:
    # no random start on either side: the same deterministic iterates x_{k+1} = Proj(x_k + step)
    model = _conv_model()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 1, 8, 8, generator=g)
    y = torch.randint(0, 4, (16,), generator=g)
    ours = pgd(model, x, y, robrep.threat(norm, eps), steps=10, step_size=alpha, random_start=False, keep_best=False)
    cls = torchattacks.PGD if norm == "linf" else torchattacks.PGDL2
    theirs = cls(model, eps=eps, alpha=alpha, steps=10, random_start=False)(x, y)
    assert (theirs - x).abs().max() > eps / 4  # the attack moved
    torch.testing.assert_close(ours.x_adv, theirs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("norm,eps", [("l2", 1.0)])  # linf: tests/test_attacks.py (PGD and APGD)
def test_pgd_not_weaker_than_torchattacks_with_random_starts(norm: str, eps: float, tiny_trained, demo_data) -> None:
    model, _ = tiny_trained
    x, y = next(iter(demo_data[1].head(100).batches(100)))
    thr = robrep.threat(norm, eps)
    alpha = eps / 3
    ours = robrep.evaluate(model, (x, y), threat=thr, attack="pgd", attack_kwargs={"steps": 10, "step_size": alpha})
    cls = torchattacks.PGD if norm == "linf" else torchattacks.PGDL2
    torch.manual_seed(0)
    xa = cls(model, eps=eps, alpha=alpha, steps=10, random_start=True)(x, y)
    assert thr.contains(xa, x).all()
    with torch.no_grad():
        theirs = float(((model(x).argmax(1) == y) & (model(xa).argmax(1) == y)).float().mean())
    assert ours.robust_accuracy <= theirs + 0.01, (ours.robust_accuracy, theirs)
    assert ours.robust_accuracy < ours.clean_accuracy  # the radius is large enough to matter
