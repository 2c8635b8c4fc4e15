"""Unsupervised encoders: RobrepModels whose output *is* the representation.

``dim-encoder``: the Deep InfoMax ``basic_encoder`` used by Zhu, Zhang & Evans (ICML 2020,
docs/methods/vulnerability.md): three 4x4 stride-2 convs (64-128-256) with BN+ReLU, FC 1024 + BN + ReLU,
FC to a 64-d representation (the final ``nn.Linear`` is named ``fc``, as for every robrep net).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .zoo import MODELS

__all__ = ["DIMEncoder"]


@MODELS.register("dim-encoder", help="Deep InfoMax basic_encoder of Zhu et al. 2020 (64-d output = the representation)")
class DIMEncoder(nn.Module):
    """Zhu et al. 2020 / Hjelm et al. 2019 ``basic_encoder``.

    Args:
        num_classes: ignored (kept for the factory signature; the output size is ``dim``).
        input_shape: (C, H, W); 28x28 gives a 256x3x3 map, 32x32 a 256x4x4 map.
        dim: representation size (paper: 64).
        width: channels of the first conv (paper: 64; then 2x, 4x).
        hidden: size of the hidden FC layer (paper: 1024).

    Shape:
        - Input: (N, C, H, W) normalized images.  Output: (N, dim).
    """

    def __init__(self, num_classes: int = 64, input_shape: Sequence[int] = (1, 28, 28), dim: int = 64, width: int = 64,
                 hidden: int = 1024) -> None:
        super().__init__()
        c, h, w = input_shape

        def out(s: int) -> int:
            for _ in range(3):
                s = (s + 2 - 4) // 2 + 1
            return s

        self.features = nn.Sequential(
            nn.Conv2d(c, width, 4, 2, 1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.Conv2d(2 * width, 4 * width, 4, 2, 1), nn.BatchNorm2d(4 * width), nn.ReLU(),
        )
        self.fc1 = nn.Sequential(nn.Linear(4 * width * out(h) * out(w), hidden), nn.BatchNorm1d(hidden), nn.ReLU())
        self.fc = nn.Linear(hidden, dim)

    def forward_features(self, x):  # type: ignore[no-untyped-def]
        return self.features(x)

    def forward_head(self, x, pre_logits: bool = False):  # type: ignore[no-untyped-def]
        h = self.fc1(x.flatten(1))
        return h if pre_logits else self.fc(h)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.forward_head(self.forward_features(x))
