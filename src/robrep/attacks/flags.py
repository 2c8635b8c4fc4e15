"""Flags that say when a robust-accuracy number should not be trusted as it is.

AutoAttack's checks (randomized output, zero gradients, Square beating the white-box attacks)
and two more (robust accuracy rising with eps, clean accuracy below the robust one). Each flag
says what was seen, what it means and what to try; ``evaluate`` puts them in its result, the
CLI prints them and the JSON and report carry them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

__all__ = ["Flag", "FLAG_HELP", "GRAD_SHARE", "SQUARE_GAP", "randomized_flag", "gradient_flag", "black_box_flag",
           "eps_curve_flag", "clean_below_robust_flag"]

GRAD_SHARE = 0.01
"""A gradient flag is raised when more than this share of the attacked points has a zero or
non-finite input gradient."""
SQUARE_GAP = 0.002
"""The black-box flag is raised when Square lowers the robust accuracy by more than this
(0.2 points, AutoAttack's threshold) after every white-box stage."""


@dataclass(frozen=True)
class Flag:
    """One finding. ``code`` is stable (for scripts); ``value`` the measured quantity."""

    code: str
    message: str
    meaning: str
    action: str
    value: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def line(self) -> str:
        return f"flag {self.code}: {self.message}; {self.meaning}; try: {self.action}"


FLAG_HELP = {
    "randomized-output": "the model's output changes between two identical calls",
    "zero-gradients": "zero or non-finite input gradients on more than 1 % of the attacked points",
    "black-box-beats-white-box": "Square (black-box) broke points that every gradient attack missed",
    "robust-rises-with-eps": "robust accuracy is higher at a larger eps",
    "clean-below-robust": "clean accuracy below the robust accuracy on a subset",
}


def randomized_flag(changed: int, total: int, protocol_randomized: bool) -> Flag | None:
    if changed == 0:
        return None
    return Flag("randomized-output", f"the output changed between two identical calls on {changed} of {total} images",
                "a randomized model: a single gradient per step is noisy and overstates robustness",
                "autoattack-rand (EOT, the gradient averaged over 20 calls)" if not protocol_randomized
                else "nothing more: autoattack-rand already averages 20 calls; compare with more (eot_iter)",
                changed / max(total, 1))


def gradient_flag(bad: int, attacked: int) -> Flag | None:
    share = bad / max(attacked, 1)
    if attacked == 0 or share <= GRAD_SHARE:
        return None
    return Flag("zero-gradients", f"{bad} of {attacked} attacked points ({100 * share:.1f} %) have a zero or non-finite "
                "input gradient of the margin", "gradient masking (e.g. quantization, a non-differentiable step): "
                "gradient attacks see nothing to follow there",
                "trust Square's stage of the protocol (autoattack-standard), or attack a differentiable surrogate "
                "(BPDA: replace the step by the identity in the backward pass)", share)


def black_box_flag(stage_accuracy: Mapping[str, float]) -> Flag | None:
    """Square's stage lowered robust accuracy below every white-box stage by more than ``SQUARE_GAP``."""
    if "square" not in stage_accuracy:
        return None
    white = [v for k, v in stage_accuracy.items() if k not in ("square", "clean")]
    if not white:
        return None
    gap = min(white) - stage_accuracy["square"]
    if gap <= SQUARE_GAP:
        return None
    return Flag("black-box-beats-white-box", f"Square lowered robust accuracy by {100 * gap:.2f} points after every "
                "gradient attack", "the gradients mislead the white-box attacks (gradient masking or obfuscation)",
                "more Square queries and restarts, or an adaptive attack", gap)


def eps_curve_flag(curve: Sequence[tuple[float, float]], tol: float = 0.0) -> Flag | None:
    """Robust accuracy higher at a larger eps than at a smaller one (by more than ``tol``)."""
    pts = sorted(curve)
    worst = 0.0
    at = None
    for i in range(len(pts)):
        for j in range(i + 1, len(pts)):
            rise = pts[j][1] - pts[i][1]
            if rise > worst:
                worst, at = rise, (pts[i][0], pts[j][0])
    if at is None or worst <= tol:
        return None
    return Flag("robust-rises-with-eps", f"robust accuracy is {100 * worst:.2f} points higher at eps {at[1]:g} than at "
                f"eps {at[0]:g}", "the attack fails at the larger radius where it succeeded at the smaller one: "
                "it is too weak or the gradients are masked", "more steps/restarts, autoattack-standard, or check "
                "the step size", worst)


def clean_below_robust_flag(per_class_clean: Mapping[int, float], per_class_robust: Mapping[int, float] | None) -> Flag | None:
    """Robust accuracy above clean accuracy on some class (impossible for a deterministic model)."""
    if not per_class_robust:
        return None
    over = {k: per_class_robust[k] - per_class_clean.get(k, 0.0) for k in per_class_robust}
    bad = {k: v for k, v in over.items() if v > 1e-12}
    if not bad:
        return None
    k = max(bad, key=lambda c: bad[c])
    return Flag("clean-below-robust", f"on class {k} robust accuracy exceeds clean accuracy by {100 * bad[k]:.2f} points "
                f"({len(bad)} classes)", "the model answers differently for the same input (randomness) or the "
                "attack's re-check disagrees with the clean pass", "autoattack-rand and a fixed seed; check the model's "
                "determinism (dropout, eval mode)", bad[k])
