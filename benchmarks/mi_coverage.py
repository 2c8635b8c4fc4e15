"""Coverage and bias of the default MI estimator on a Gaussian closed form, over many seeds.

rho = 0.9 pairs (I = -log(1 - rho^2) / 2 = 0.8304 nats), 4096 per seed, the sizes of
``tests/test_info.py``'s coverage test (3 critics, training batch 128, held-out batches of 1024,
the preset's early stopping). Prints, per block of 20 seeds, how many 95 % intervals cover the
truth and the mean relative error; ``--average`` and ``--critic-temperature`` switch the weight
averaging and the bounded scores (0 = off) to compare with the estimator without them.

    python benchmarks/mi_coverage.py --seeds 60                                   # the default
    python benchmarks/mi_coverage.py --seeds 60 --average 0 --critic-temperature 0   # neither
"""

from __future__ import annotations

import argparse
import math

import torch

from robrep.info import estimate_mi_samples


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--seeds", type=int, default=20, help="seeds 0..N-1, reported in blocks of 20")
    p.add_argument("--average", type=float, default=None, help="critic weight averaging (default: the preset's)")
    p.add_argument("--critic-temperature", type=float, default=None, help="bounded scores (default: the preset's)")
    a = p.parse_args()
    torch.set_num_threads(1)
    true = -0.5 * math.log(1 - 0.81)
    rows = []
    for seed in range(a.seeds):
        g = torch.Generator().manual_seed(100 + seed)
        x = torch.randn(4096, 1, generator=g)
        z = 0.9 * x + math.sqrt(1 - 0.81) * torch.randn(4096, 1, generator=g)
        r = estimate_mi_samples(x, z, n_critics=3, batch_size=128, eval_batch_size=1024, n_eval_batches=2, lr=3e-3, seed=seed,
                                critic_kwargs={"hidden": 64, "embed": 16, "layers": 2}, average=a.average,
                                critic_temperature=a.critic_temperature)
        rows.append((r.estimate, r.low <= true <= r.high))
        print(f"seed {seed}: {r.estimate:.4f} [{r.low:.3f}, {r.high:.3f}] covers={rows[-1][1]} steps={r.steps_run}", flush=True)
    for i in range(0, len(rows), 20):
        blk = rows[i : i + 20]
        print(f"seeds {i}-{i + len(blk) - 1}: cover {sum(c for _, c in blk)}/{len(blk)}, "
              f"mean error {100 * (sum(e for e, _ in blk) / len(blk) / true - 1):+.1f} %")
    print(f"all: cover {sum(c for _, c in rows)}/{len(rows)}, mean error {100 * (sum(e for e, _ in rows) / len(rows) / true - 1):+.1f} %")


if __name__ == "__main__":
    main()
