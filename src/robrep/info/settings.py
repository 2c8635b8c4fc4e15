"""Settings of an MI / vulnerability estimate: :class:`MISettings`, the named presets and
:func:`mi_settings` (a preset plus overrides, validated). See docs/methods/vulnerability.md."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from ..errors import InputError
from .mi_bounds import get_bound

__all__ = ["DEFAULT_PRESET", "MISettings", "PRESETS", "mi_settings"]


@dataclass(frozen=True)
class MISettings:
    """Everything that decides an MI / vulnerability estimate (one preset plus overrides).

    Attributes:
        estimator: bound name (``infonce``, ``dv``, ``jsd``, ``smile``, ``dv-code``).
        critic: ``mlp`` (separable MLP critics, batched), ``dim`` (the paper's), ``concat``.
        critic_kwargs: options of the critic (e.g. ``{"hidden": 128, "embed": 32}``).
        critic_temperature: ``mlp`` critics score pairs by the cosine of their embeddings over this
            temperature (scores bounded by 1/temperature); 0: the unbounded inner product.
            A ``temperature`` in critic_kwargs takes precedence.
        n_critics: critics per estimate (trained together on one shared batch).
        steps: maximum clean critic steps; adv_steps: maximum worst-case critic steps.
        batch_size: training batch (InfoNCE: also the evaluation batch unless eval_batch_size).
        eval_batch_size: held-out batch size (None: batch_size). InfoNCE reads at most
            log(eval_batch_size) nats.
        lr: Adam learning rate of the critics.
        attack_steps, attack_step_size: PGD per critic step (step default 2.5 eps / steps).
        eval_attack_steps: PGD steps on each held-out batch.
        cross_read: the held-out batch is attacked twice, each time against half of the critics,
            and read by the other half (the attack cannot exploit the critics that read it);
            False (every preset): one attack against all critics, read by them (the paper's evaluation).
        eval_fraction: share of the inputs held out for evaluation (whole batches) when
            ``folds`` is 1 (unused with cross-fitting).
        n_eval_batches: held-out batches per fold (None: all of the fold's batches, or as many as
            eval_fraction allows with one fold).
        folds: cross-fitting: the inputs are cut into evaluation batches, batch j belongs to fold
            j mod ``folds``; each fold is held out once while its critics train on the rest, and
            all held-out units enter the interval (every batch is read once; the cost is
            ``folds`` times one fit).
        warm_start: worst-case critics start from the trained clean critics.
        eval_every, patience: early stopping on a validation batch (patience 0: off).
        average: the critics validated and read are an exponential moving average of the trained
            weights, decay ``average`` per step (0: the last weights).
        level: interval level.
        preset: the preset these settings came from.
    """

    estimator: str = "infonce"
    critic: str = "mlp"
    critic_kwargs: dict[str, Any] | None = None
    critic_temperature: float = 0.1
    n_critics: int = 8
    steps: int = 300
    adv_steps: int = 100
    batch_size: int = 64
    eval_batch_size: int | None = None
    lr: float = 1e-3
    attack_steps: int = 3
    attack_step_size: float | None = None
    eval_attack_steps: int = 10
    cross_read: bool = False
    eval_fraction: float = 0.3
    n_eval_batches: int | None = None
    folds: int = 3
    warm_start: bool = True
    eval_every: int = 25
    patience: int = 3
    average: float = 0.95
    level: float = 0.95
    preset: str = "standard"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, MISettings] = {
    # measured choice (docs/benchmarks/vulnerability.md): InfoNCE, 8 batched separable MLP critics,
    # three-fold cross-fitting
    "standard": MISettings(),
    # a first look in seconds: fewer critics and steps, shorter attacks
    "quick": MISettings(n_critics=3, steps=150, adv_steps=50, attack_steps=2, eval_attack_steps=5, eval_every=25,
                        patience=2, folds=1, preset="quick"),
    # Zhu et al. 2020's settings: DV bound, DIM critic (K = 2048, width 64), Adam 1e-4, batch 128,
    # PGD-7 per critic step (no random start), PGD-20 at evaluation, independent critics, no early stop
    "paper": MISettings(estimator="dv", critic="dim", critic_kwargs={"hidden": 2048, "width": 64}, n_critics=3, steps=500,
                        adv_steps=500, batch_size=128, lr=1e-4, attack_steps=7, eval_attack_steps=20, eval_fraction=0.2,
                        folds=1, warm_start=False, patience=0, average=0.0, critic_temperature=0.0, preset="paper"),
}
DEFAULT_PRESET = "standard"


def mi_settings(preset: str | MISettings | None = None, **overrides: Any) -> MISettings:
    """The settings of ``preset`` (``standard``, ``quick``, ``paper``) with ``overrides`` applied
    (``None`` values keep the preset's)."""
    if isinstance(preset, MISettings):
        base = preset
    else:
        name = DEFAULT_PRESET if preset is None else str(preset)
        if name not in PRESETS:
            raise InputError(f"unknown vulnerability preset {name!r}; choose one of {sorted(PRESETS)}")
        base = PRESETS[name]
    names = {f.name for f in fields(MISettings)}
    bad = [k for k in overrides if k not in names]
    if bad:
        raise InputError(f"unknown estimator setting(s) {bad}; known: {sorted(names)}")
    s = replace(base, **{k: v for k, v in overrides.items() if v is not None})
    for k in ("n_critics", "batch_size", "steps"):
        if int(getattr(s, k)) < 1:
            raise InputError(f"{k} must be >= 1, got {getattr(s, k)}")
    if s.batch_size < 2:
        raise InputError(f"batch_size must be >= 2 (negatives are other batch members), got {s.batch_size}")
    if not s.critic_temperature >= 0:
        raise InputError(f"critic_temperature must be >= 0 (0: unbounded scores), got {s.critic_temperature}")
    if not 0 <= s.average < 1:
        raise InputError(f"average (the critics' weight-averaging decay) must be in [0, 1), got {s.average}")
    if not 0 < s.eval_fraction < 1:
        raise InputError(f"eval_fraction must be in (0, 1), got {s.eval_fraction}")
    get_bound(s.estimator)
    return s
