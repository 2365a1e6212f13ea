"""Exponential moving average of model weights (with the usual warm-up of the decay)."""
from __future__ import annotations

import copy
import math

import torch


class ModelEMA:
    """Keeps ``ema = d * ema + (1 - d) * weights`` after each step, with ``d = decay * (1 - exp(-n / tau))``
    so early averages are not dominated by the random init. Buffers (BN statistics) are copied."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.9998, tau: float = 2000.0):
        module = model.module if hasattr(model, "module") else model
        self.ema = copy.deepcopy(module).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        module = model.module if hasattr(model, "module") else model
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        msd = module.state_dict()
        for k, v in self.ema.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[k].detach(), alpha=1 - d)
            else:
                v.copy_(msd[k])

    def state_dict(self) -> dict:
        return {"model": self.ema.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.ema.load_state_dict(state["model"])
        self.updates = int(state["updates"])
