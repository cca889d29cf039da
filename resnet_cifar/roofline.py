"""How far a training step is from what the machine can do (the benchmark's roofline columns).

Two numbers make the comparison: the machine's matrix-multiply rate in each precision, measured here on a
large square matmul (what its matrix units and vector units can do at best), and the arithmetic of one
training step, counted from the model itself with torch's FlopCounterMode over a forward and a backward pass
(convolutions and the linear layer: two FLOPs a multiply-add), not a constant. Achieved FLOP/s = FLOPs per
image x images/s; its fraction of the matmul rate of the step's precision says how much is left.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

MATMUL_SIZE = 2048  # large enough to reach the machine's rate, small enough for a second's measurement
MATMUL_SECONDS = 1.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(dtype: torch.dtype, device: torch.device, size: int = MATMUL_SIZE,
                seconds: float = MATMUL_SECONDS) -> float:
    """FLOP/s of `size` x `size` matrix products in `dtype` on `device`, over about `seconds` after a warm-up."""
    a, b = (torch.randn(size, size, device=device).to(dtype) for _ in range(2))
    out = torch.empty(size, size, device=device, dtype=dtype)
    for _ in range(2):
        torch.mm(a, b, out=out)
    _sync(device)
    count, start = 0, time.perf_counter()
    while True:
        torch.mm(a, b, out=out)
        count += 1
        if count % 4 == 0:
            _sync(device)
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return 2.0 * size**3 * count / elapsed


def training_flops_per_image(model: nn.Module, num_classes: int, batch: int = 2) -> float:
    """FLOPs of one image's forward and backward pass through `model` (the optimizer's few element-wise
    operations aside), counted on a batch of `batch` random images. The model is not changed: its weights,
    gradients and BN statistics are left as they were."""
    original_grads = [p.grad for p in model.parameters()]
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    was_training = model.training
    device = next(model.parameters()).device
    images = torch.randn(batch, 3, 32, 32, device=device)
    labels = torch.randint(0, num_classes, (batch,), device=device)
    model.train()
    try:
        with FlopCounterMode(display=False) as counter:
            loss = F.cross_entropy(model(images), labels)
            grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])
        del grads
    finally:
        model.train(was_training)
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
        for p, g in zip(model.parameters(), original_grads):
            p.grad = g
    return counter.get_total_flops() / batch
