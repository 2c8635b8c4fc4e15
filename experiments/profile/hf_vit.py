"""Card of a Hugging Face ViT with random weights (a tiny ``ViTConfig``, 64 px), profiled
through the Python API: the model is wrapped so that robrep's contract holds (inputs in [0,1],
normalization inside, logits out; the representation is the input of the classifier, the
layer-normed CLS token).

    python experiments/profile/hf_vit.py OUT_DIR [--eps 0.1] [--set key=value ...]
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from robrep.cli.profile import _parse_set
from robrep.models import wrap
from robrep.profile import get_budget, profile
from robrep.threats import threat


class HFLogits(nn.Module):
    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(pixel_values=x).logits


def main() -> None:
    from transformers import ViTConfig, ViTForImageClassification

    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--budget", default="quick")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--size", type=int, default=64)
    a = p.parse_args()
    torch.manual_seed(0)
    cfg = ViTConfig(image_size=a.size, patch_size=16, hidden_size=192, num_hidden_layers=4, num_attention_heads=3,
                    intermediate_size=768, num_labels=10)
    net = HFLogits(ViTForImageClassification(cfg)).eval()
    model = wrap(net, num_classes=10, input_shape=(3, a.size, a.size), mean=(0.5,) * 3, std=(0.5,) * 3,
                 arch="hf:ViTForImageClassification")
    b = get_budget(a.budget)
    ch = _parse_set(a.set)
    if ch:
        b = b.with_(**ch)
    r = profile(model, "demo", out=a.out, budget=b, threat=threat("linf", a.eps), name="hf-vit-tiny (random init)",
                random_init=True, overwrite=True, log=print)
    print(r.card_json)


if __name__ == "__main__":
    main()
