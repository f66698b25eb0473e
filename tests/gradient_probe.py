"""A callback that saves the (synchronised) gradients of the first training steps, on rank 0."""

from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback


class SaveGradients(Callback):
    def __init__(self, path: str, steps: int = 1):
        self.path, self.steps, self.saved = Path(path), steps, []

    def on_after_backward(self, trainer, pl_module):
        # Under DDP the all-reduce has averaged the gradients across processes by now.
        if trainer.global_rank == 0 and len(self.saved) < self.steps:
            self.saved.append({n: p.grad.detach().clone() for n, p in pl_module.named_parameters() if p.grad is not None})
            torch.save(self.saved, self.path)
