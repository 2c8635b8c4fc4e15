"""Packages that can be called like their main function (``robrep.evaluate(...)``, ``robrep.train(...)``).

``robrep.evaluate`` is the measurement package *and* the documented call
``robrep.evaluate(model, data, threat=...)``. A plain ``from .evaluate import evaluate`` in
``robrep/__init__.py`` would replace the package attribute by the function, so that
``robrep.evaluate.linear_probe`` failed while ``from robrep.evaluate import linear_probe``
worked. Instead the package module itself becomes callable: calling it calls its function of
the same name (looked up at call time, so patching ``robrep.evaluate.evaluate`` is seen).
"""

from __future__ import annotations

import inspect
import sys
import types
from typing import Any

__all__ = ["make_package_callable"]


class CallablePackage(types.ModuleType):
    """A package module whose call runs its function ``__call_name__``."""

    __call_name__: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self, self.__call_name__)(*args, **kwargs)


def make_package_callable(module_name: str, function_name: str) -> None:
    """Make the (imported) module ``module_name`` callable as its function ``function_name``.

    ``inspect.signature`` and ``help`` of the package then show that function's signature.
    """
    mod = sys.modules[module_name]
    fn = getattr(mod, function_name)
    mod.__class__ = CallablePackage
    mod.__call_name__ = function_name  # type: ignore[attr-defined]
    mod.__signature__ = inspect.signature(fn)  # type: ignore[attr-defined]
