"""Train/eval mode switching that always restores the previous modes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["eval_mode"]


@contextmanager
def eval_mode(*modules: nn.Module, enable: bool = True) -> Iterator[None]:
    """Put ``modules`` in eval mode for the ``with`` block, then restore each one's mode.

    BatchNorm uses its running statistics and Dropout is off inside the block (what attacks,
    certificates and measurements need). On exit -- also after an exception -- every module is
    put back with ``module.train(was_training)``. ``enable=False`` leaves the modes unchanged
    inside the block (an objective's ``attack_eval_mode=False``) but still restores them.

    Example::

        with eval_mode(model, critic):
            x_adv = attack(model, x)
    """
    was = [m.training for m in modules]
    try:
        if enable:
            for m in modules:
                m.eval()
        yield
    finally:
        for m, w in zip(modules, was):
            m.train(w)
