"""Critics T(x, z) for the variational MI bounds (registry ``CRITICS``).

A critic maps a batch of inputs x (N, ...) and representations z (N, D) to the score tensor
(L, N, N), ``scores[l, i, j] = T_l(x_i, z_j)``; every critic here is *separable* (a dot product
of an x-embedding and a z-embedding), so all N^2 pairs cost one matrix product.

* ``dim``: the critic of Zhu, Zhang & Evans (ICML 2020, docs/methods/vulnerability.md), the Deep InfoMax
  "local" critic (Hjelm et al. 2019): a conv branch on the image gives one K-vector per
  spatial location, a 1x1 residual block on z gives one K-vector, the score is their dot
  product (L = number of locations).
* ``mlp``: a separable MLP critic on flattened vectors (L = 1), for synthetic data and tests.

A factory has the signature ``factory(x_shape, z_dim, **options) -> nn.Module``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from math import prod

import torch
import torch.nn.functional as F
from torch import nn

from .._registry import Registry
from ..errors import InputError

__all__ = ["CRITICS", "ConcatMLPCritic", "CriticStack", "DIMCritic", "ResidualBlock1x1", "SeparableMLPCritic",
           "SeparableMLPEnsemble", "create_critic", "create_critics", "list_critics"]

CriticFactory = Callable[..., nn.Module]
CRITICS: Registry[CriticFactory] = Registry("critic")


class ResidualBlock1x1(nn.Module):
    """Deep InfoMax ``MI1x1ConvNet``: [1x1 conv (no bias) - BN - ReLU - 1x1 conv] plus a linear
    1x1 shortcut initialised to the identity on the first ``min(cin, k)`` outputs and
    U(-0.01, 0.01) elsewhere, then LayerNorm over channels.

    Shape:
        - Input: (N, cin, H, W).  Output: (N, k, H, W).
    """

    def __init__(self, cin: int, k: int) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(cin, k, 1, bias=False), nn.BatchNorm2d(k), nn.ReLU(), nn.Conv2d(k, k, 1))
        self.shortcut = nn.Conv2d(cin, k, 1, bias=False)
        with torch.no_grad():
            self.shortcut.weight.uniform_(-0.01, 0.01)
            m = min(cin, k)
            self.shortcut.weight[:m, :m, 0, 0] = torch.eye(m) + self.shortcut.weight[:m, :m, 0, 0] * (1 - torch.eye(m))
        self.norm = nn.LayerNorm(k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block(x) + self.shortcut(x)
        return self.norm(h.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class DIMCritic(nn.Module):
    """The paper's critic: ``T_l(x, z) = <L(x)_l, G(z)>``.

    Args:
        x_shape: (C, H, W) of the images.
        z_dim: representation size D.
        hidden: K, the embedding size (paper: 2048).
        width: channels of the first local conv (paper: 64; the second has 2 * width).

    Shape:
        - x: (N, C, H, W) in [0,1]; z: (N, D).  Output: (L, N, N) with L = (H/4) * (W/4).
    """

    def __init__(self, x_shape: Sequence[int], z_dim: int, hidden: int = 2048, width: int = 64) -> None:
        super().__init__()
        if len(x_shape) != 3:
            raise InputError(f"the dim critic needs images (C, H, W), got input shape {tuple(x_shape)}; use critic='mlp' for vectors")
        c = int(x_shape[0])
        self.local = nn.Sequential(
            nn.Conv2d(c, width, 4, 2, 1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            ResidualBlock1x1(2 * width, hidden),
        )
        self.glob = ResidualBlock1x1(int(z_dim), hidden)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        lx = self.local(x).flatten(2)  # (N, K, L)
        gz = self.glob(z.flatten(1)[:, :, None, None]).flatten(1)  # (N, K)
        return torch.einsum("nkl,mk->lnm", lx, gz)


def _check_temperature(t: float | None) -> float | None:
    if t is None:
        return None
    if not (isinstance(t, (int, float)) and math.isfinite(t) and t > 0):
        raise InputError(f"critic temperature must be a positive number or None, got {t!r}")
    return float(t)


def _bounded(fx: torch.Tensor, gz: torch.Tensor, t: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings whose inner product is the score: as they are (t None), or unit vectors with the
    x side divided by ``t`` (score = cosine / t)."""
    if t is None:
        return fx, gz
    return F.normalize(fx, dim=-1) / t, F.normalize(gz, dim=-1)


class SeparableMLPCritic(nn.Module):
    """``T(x, z) = f(x) . g(z)`` with two ReLU MLPs (Poole et al. 2019's separable critic).

    Args:
        x_shape: shape of one x (flattened).
        z_dim: representation size.
        hidden: hidden width; embed: embedding size; layers: hidden layers per branch.
        shortcut: add a linear shortcut to each branch (identity-initialised, as the DIM
            critic's 1x1 blocks), so bilinear scores x^T A z are learnt fast.
        temperature: None: the score is the inner product (unbounded). A number t: the score is
            the cosine of the two embeddings divided by t, so it lies in [-1/t, 1/t] (as in
            SimCLR's contrastive loss). A bounded score keeps the critic from growing its scale
            without limit once the training batch is solved, and bounds how far an input moved
            off the data the critic saw can push one read (see docs/methods/vulnerability.md).

    Shape:
        - x: (N, ...); z: (N, D).  Output: (1, N, N).
    """

    def __init__(self, x_shape: Sequence[int], z_dim: int, hidden: int = 128, embed: int = 32, layers: int = 2,
                 shortcut: bool = True, temperature: float | None = None) -> None:
        super().__init__()
        self.shortcut = shortcut
        self.temperature = _check_temperature(temperature)

        def mlp(d: int) -> nn.Sequential:
            mods: list[nn.Module] = []
            for _ in range(layers):
                mods += [nn.Linear(d, hidden), nn.ReLU()]
                d = hidden
            mods.append(nn.Linear(d, embed))
            return nn.Sequential(*mods)

        def lin(d: int) -> nn.Linear:
            m = nn.Linear(d, embed, bias=False)
            with torch.no_grad():  # DIM-style identity-initialised shortcut
                m.weight.uniform_(-0.01, 0.01)
                k = min(d, embed)
                m.weight[:k, :k] += torch.eye(k)
            return m

        dx = int(prod(x_shape))
        self.f, self.g = mlp(dx), mlp(int(z_dim))
        self.fs = lin(dx) if shortcut else None
        self.gs = lin(int(z_dim)) if shortcut else None

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        x, z = x.flatten(1), z.flatten(1)
        fx, gz = self.f(x), self.g(z)
        if self.fs is not None and self.gs is not None:
            fx, gz = fx + self.fs(x), gz + self.gs(z)
        fx, gz = _bounded(fx, gz, self.temperature)
        return (fx @ gz.T).unsqueeze(0)


class ConcatMLPCritic(nn.Module):
    """``T(x, z) = MLP([x, z])`` evaluated on all N^2 pairs (Poole et al. 2019's concat critic);
    more expressive than a separable critic, N times more expensive.

    Shape:
        - x: (N, ...); z: (N, D).  Output: (1, N, N).
    """

    def __init__(self, x_shape: Sequence[int], z_dim: int, hidden: int = 128, layers: int = 2) -> None:
        super().__init__()
        d, mods = int(prod(x_shape)) + int(z_dim), []
        for _ in range(layers):
            mods += [nn.Linear(d, hidden), nn.ReLU()]
            d = hidden
        mods.append(nn.Linear(d, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        x, z = x.flatten(1), z.flatten(1)
        n = x.shape[0]
        xz = torch.cat([x[:, None, :].expand(n, n, -1), z[None, :, :].expand(n, n, -1)], dim=-1)
        return self.net(xz).squeeze(-1).unsqueeze(0)


class SeparableMLPEnsemble(nn.Module):
    """``k`` independent :class:`SeparableMLPCritic` s evaluated in one batched pass.

    Every critic has its own weights (stacked along a leading dimension of size ``k``, applied
    with batched matrix products), so training them together on one shared batch costs about one
    critic's Python overhead and one pass over the batch, while their estimates stay independent
    given the data. Critic ``j`` is initialised exactly as ``SeparableMLPCritic`` would be under
    its own random stream.

    Args:
        k: number of critics.
        x_shape, z_dim, hidden, embed, layers, shortcut, temperature: as :class:`SeparableMLPCritic`.

    Shape:
        - x: (N, ...); z: (N, D).  Output: (k, 1, N, N), ``out[j, 0, a, b] = T_j(x_a, z_b)``.
    """

    def __init__(self, k: int, x_shape: Sequence[int], z_dim: int, hidden: int = 128, embed: int = 32, layers: int = 2,
                 shortcut: bool = True, temperature: float | None = None) -> None:
        super().__init__()
        if k < 1:
            raise InputError(f"an ensemble needs at least one critic, got k={k}")
        self.k = int(k)
        self.temperature = _check_temperature(temperature)
        members = [SeparableMLPCritic(x_shape, z_dim, hidden, embed, layers, shortcut) for _ in range(self.k)]

        def stack(get: Callable[[SeparableMLPCritic], list[nn.Linear]]) -> tuple[nn.ParameterList, nn.ParameterList]:
            n = len(get(members[0]))
            ws = nn.ParameterList([nn.Parameter(torch.stack([get(m)[i].weight.detach().T for m in members])) for i in range(n)])
            bs = nn.ParameterList([nn.Parameter(torch.stack([get(m)[i].bias.detach()[None, :] for m in members])) for i in range(n)])
            return ws, bs

        lins = lambda seq: [mod for mod in seq if isinstance(mod, nn.Linear)]  # noqa: E731
        self.fw, self.fb = stack(lambda m: lins(m.f))
        self.gw, self.gb = stack(lambda m: lins(m.g))
        self.shortcut = shortcut
        if shortcut:
            self.fs = nn.Parameter(torch.stack([m.fs.weight.detach().T for m in members]))  # type: ignore[union-attr]
            self.gs = nn.Parameter(torch.stack([m.gs.weight.detach().T for m in members]))  # type: ignore[union-attr]

    @staticmethod
    def _branch(ws: nn.ParameterList, bs: nn.ParameterList, v: torch.Tensor) -> torch.Tensor:
        h = v.unsqueeze(0).expand(ws[0].shape[0], -1, -1)
        for i, (w, b) in enumerate(zip(ws, bs)):
            h = torch.baddbmm(b, h, w)
            if i < len(ws) - 1:
                h = torch.relu(h)
        return h

    def embed(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The (k, N, E) embeddings of x and of z (scores are their inner products)."""
        x, z = x.flatten(1), z.flatten(1)
        fx, gz = self._branch(self.fw, self.fb, x), self._branch(self.gw, self.gb, z)
        if self.shortcut:
            fx = fx + torch.matmul(x, self.fs)
            gz = gz + torch.matmul(z, self.gs)
        return fx, gz

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        fx, gz = self.embed(x, z)
        fx, gz = _bounded(fx, gz, self.temperature)
        return torch.bmm(fx, gz.transpose(1, 2)).unsqueeze(1)


class CriticStack(nn.Module):
    """Several critics of any kind run one after the other, scores stacked: (k, L, N, N)."""

    def __init__(self, critics: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(critics)
        self.k = len(self.members)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return torch.stack([c(x, z) for c in self.members])


def create_critics(name: str, k: int, x_shape: Sequence[int], z_dim: int, seed: int = 0, **kwargs: object) -> nn.Module:
    """``k`` critics called ``name`` as one module returning (k, L, N, N) scores.

    ``mlp`` gives a :class:`SeparableMLPEnsemble` (one batched pass); any other name a
    :class:`CriticStack`. Initialisation is seeded by ``seed`` (critic ``j`` differs from critic
    ``i``), without touching the global random state.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name == "mlp":
            try:
                return SeparableMLPEnsemble(k, x_shape, z_dim, **kwargs)  # type: ignore[arg-type]
            except TypeError as e:
                raise InputError(f"bad options for critic {name!r}: {e}") from e
        return CriticStack([create_critic(name, x_shape, z_dim, **kwargs) for _ in range(k)])


CRITICS.add("dim", DIMCritic, help="Zhu et al. / Deep InfoMax local critic: conv branch on x, 1x1 block on z, dot product")
CRITICS.add("mlp", SeparableMLPCritic, help="separable MLP critic on flattened vectors (synthetic data, tests)")
CRITICS.add("concat", ConcatMLPCritic, help="MLP on concatenated (x, z) pairs, all N^2 of them (vectors)")


def create_critic(name: str, x_shape: Sequence[int], z_dim: int, **kwargs: object) -> nn.Module:
    """Build the critic called ``name`` for inputs of shape ``x_shape`` and ``z_dim``-d codes."""
    try:
        return CRITICS.get(name)(tuple(int(s) for s in x_shape), int(z_dim), **kwargs)
    except TypeError as e:
        raise InputError(f"bad options for critic {name!r}: {e}") from e


def list_critics() -> list[str]:
    return CRITICS.names()
