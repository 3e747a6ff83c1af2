"""Accuracy of a model over uint8 image tensors, batched."""

from __future__ import annotations

import torch

from models.batching import iterate


@torch.no_grad()
def predict(model, x: torch.Tensor, device, batch_size: int = 1000, **forward_kwargs) -> torch.Tensor:
    """Predicted class per image (on the CPU)."""
    was = model.training
    model.eval()
    preds = [model(xb, **forward_kwargs).argmax(1).cpu()
             for xb, _ in iterate(x, torch.zeros(len(x), dtype=torch.long), batch_size, device)]
    model.train(was)
    return torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)


def accuracy(model, x: torch.Tensor, y: torch.Tensor, device, batch_size: int = 1000, **forward_kwargs) -> float:
    """Top-1 accuracy in percent."""
    if len(x) == 0:
        return float("nan")
    return 100.0 * (predict(model, x, device, batch_size, **forward_kwargs) == y).float().mean().item()
