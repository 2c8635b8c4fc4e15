"""Named budgets of ``robrep profile``: how many samples, steps and critics each measure uses.

A budget is a frozen dataclass; the card records all of its fields, so every number on a card
comes with the sample size it was measured on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from ..errors import UnknownNameError

__all__ = ["Budget", "BUDGETS", "QUICK", "STANDARD", "PAPER", "get_budget", "vulnerability_kwargs", "vulnerability_min_images"]


@dataclass(frozen=True)
class Budget:
    """Sample counts and steps of every measure of a robustness card.

    Attributes:
        name: ``quick``, ``standard``, ``paper`` (or a custom name).
        probe_train_n: training images of the linear probe (first of the train split).
        test_n: test images whose features give the probe's natural accuracy.
        probe_eval_n: test images attacked for the probe's adversarial accuracy.
        probe_attack: attack name (``robrep list attacks``) of the adversarial accuracy.
        probe_eval_steps: its steps (where the attack takes ``steps``).
        mi_n: test images of the vulnerability estimate (the last 20 % held out).
        mi_critics: independent critics per MI estimate (the interval is over them).
        mi_critic_hidden: hidden width of the separable MLP critic.
        mi_steps, mi_batch: clean critic training steps and batch size.
        mi_adv_steps: worst-case critic steps (the clean critics fine-tuned under attack; the
            default preset's 100 in every named budget).
        mi_attack_steps: PGD steps while training the worst-case critic.
        mi_eval_attack_steps, mi_eval_batches: PGD steps on, and number of, held-out batches.
        synbench_scales: mean scales ||mu|| of the synthetic Gaussian mixtures.
        synbench_n: synthetic realizations per scale and split.
        sensitivity_n: test images of the embedding-sensitivity distribution.
        sensitivity_steps: steps of the representation attack.
        cert_n, cert_n0, cert_samples, cert_sigma, cert_alpha: randomized smoothing of the probe
            (images, selection samples, estimation samples, noise level, failure probability).
        picture_n: images in the picture grids.
        vis_steps: inversion optimizer steps.
        smoothgrad_samples: noise samples of SmoothGrad.
    """

    name: str
    probe_train_n: int
    test_n: int
    probe_eval_n: int
    probe_attack: str
    probe_eval_steps: int
    mi_n: int
    mi_critics: int
    mi_critic_hidden: int
    mi_steps: int
    mi_batch: int
    mi_attack_steps: int
    mi_eval_attack_steps: int
    mi_eval_batches: int
    synbench_scales: tuple[float, ...]
    synbench_n: int
    sensitivity_n: int
    sensitivity_steps: int
    cert_n: int
    cert_n0: int
    cert_samples: int
    cert_sigma: float
    cert_alpha: float
    picture_n: int
    vis_steps: int
    smoothgrad_samples: int
    mi_adv_steps: int = 100  # last, with a default: cards written before it existed ran 100

    def __post_init__(self) -> None:
        from ..errors import InputError

        for k, v in asdict(self).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not v > 0:
                raise InputError(f"budget field {k} must be positive, got {v}")
        if not self.synbench_scales or min(self.synbench_scales) <= 0:
            raise InputError(f"synbench_scales must be positive mean scales, got {self.synbench_scales}")
        need = vulnerability_min_images(self)
        if self.mi_n < need:
            raise InputError(f"mi_n ({self.mi_n}) must be at least {need} for mi_batch = {self.mi_batch}: the vulnerability's "
                             f"3-fold cross-fitting holds out batches of mi_batch and each fold also needs a validation and "
                             f"a training batch; raise mi_n or lower mi_batch")
        if self.cert_alpha >= 1:
            raise InputError(f"cert_alpha must be in (0, 1), got {self.cert_alpha}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["synbench_scales"] = list(self.synbench_scales)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Budget:
        return cls(**{**d, "synbench_scales": tuple(float(s) for s in d["synbench_scales"])})

    def with_(self, **changes: Any) -> Budget:
        """A copy with some fields changed (its name gets a ``+custom`` suffix)."""
        name = changes.pop("name", self.name if self.name.endswith("+custom") else self.name + "+custom")
        return replace(self, name=name, **changes)


def vulnerability_min_images(budget: Budget) -> int:
    """The fewest images the vulnerability of ``budget`` accepts (:func:`robrep.info.min_inputs`
    of :func:`vulnerability_kwargs`: the default preset's three-fold cross-fitting)."""
    from ..info import min_inputs

    kw = vulnerability_kwargs(budget, 0)
    return min_inputs(None, **{k: v for k, v in kw.items() if k != "seed"})


def vulnerability_kwargs(budget: Budget, seed: int) -> dict[str, Any]:
    """The keyword arguments of :func:`robrep.info.estimate_mi` / ``vulnerability`` of a budget
    (what ``robrep vulnerability --critic mlp --critic-hidden H --n-critics K --steps S
    --adv-steps W --batch-size B --lr 1e-3 --attack-steps A --eval-attack-steps E --eval-batches M`` passes;
    the estimator and everything else come from the default preset, as for that command)."""
    return dict(critic="mlp", n_critics=budget.mi_critics, steps=budget.mi_steps, adv_steps=budget.mi_adv_steps,
                batch_size=budget.mi_batch, lr=1e-3, attack_steps=budget.mi_attack_steps, attack_step_size=None,
                eval_attack_steps=budget.mi_eval_attack_steps, n_eval_batches=budget.mi_eval_batches, seed=seed,
                critic_kwargs={"hidden": budget.mi_critic_hidden})


QUICK = Budget(
    name="quick", probe_train_n=500, test_n=200, probe_eval_n=100, probe_attack="pgd", probe_eval_steps=10,
    mi_n=256, mi_critics=2, mi_critic_hidden=64, mi_steps=40, mi_batch=64, mi_attack_steps=2, mi_eval_attack_steps=5,
    mi_eval_batches=2, synbench_scales=(0.5, 1.5, 2.5, 3.5, 4.5), synbench_n=128, sensitivity_n=64, sensitivity_steps=10,
    cert_n=20, cert_n0=32, cert_samples=100, cert_sigma=0.25, cert_alpha=0.001, picture_n=4, vis_steps=40,
    smoothgrad_samples=8,
)

STANDARD = Budget(
    name="standard", probe_train_n=5000, test_n=1000, probe_eval_n=500, probe_attack="pgd", probe_eval_steps=20,
    mi_n=1000, mi_critics=3, mi_critic_hidden=128, mi_steps=300, mi_batch=128, mi_attack_steps=5,
    mi_eval_attack_steps=20, mi_eval_batches=4, synbench_scales=tuple(round(0.2 * k - 0.1, 1) for k in range(1, 26)),
    synbench_n=1024, sensitivity_n=500, sensitivity_steps=20, cert_n=100, cert_n0=64, cert_samples=1000,
    cert_sigma=0.25, cert_alpha=0.001, picture_n=8, vis_steps=300, smoothgrad_samples=25,
)

PAPER = Budget(
    name="paper", probe_train_n=50000, test_n=10000, probe_eval_n=10000, probe_attack="apgd", probe_eval_steps=100,
    mi_n=10000, mi_critics=5, mi_critic_hidden=2048, mi_steps=2000, mi_batch=256, mi_attack_steps=7,
    mi_eval_attack_steps=20, mi_eval_batches=10, synbench_scales=tuple(round(0.1 * k, 1) for k in range(1, 50)),
    synbench_n=2048, sensitivity_n=1000, sensitivity_steps=100, cert_n=500, cert_n0=100, cert_samples=100000,
    cert_sigma=0.25, cert_alpha=0.001, picture_n=8, vis_steps=2000, smoothgrad_samples=50,
)

BUDGETS: dict[str, Budget] = {b.name: b for b in (QUICK, STANDARD, PAPER)}


def get_budget(name: str) -> Budget:
    """The named budget (``quick``, ``standard``, ``paper``)."""
    if name not in BUDGETS:
        raise UnknownNameError(f"unknown budget {name!r}; choose one of {', '.join(BUDGETS)}")
    return BUDGETS[name]
