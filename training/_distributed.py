"""Across processes (data parallelism: every process holds the whole adapter): gather and sum small CPU tensors.

Each step sums its metric sums over the processes, RL gathers its raw rewards, and a checkpoint gathers every
process's RNG states; the gradient buffers all-reduce themselves (`update.GradientBuffers.all_reduce`).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from accelerate import Accelerator
from torch import Tensor


def all_gather(accelerator: Accelerator, tensor: Tensor) -> list[Tensor]:
    """Every process's `tensor` (one shape on all), in process order, on the CPU; on every process.

    The exchange runs on the accelerator's device: NCCL, the backend accelerate starts for CUDA processes, moves
    no CPU tensors (gloo, the CPU processes' backend, moves both).
    """
    local = tensor.to(accelerator.device)
    gathered = [torch.empty_like(local) for _ in range(accelerator.num_processes)]
    dist.all_gather(gathered, local)
    return [part.cpu() for part in gathered]


def sum_over_processes(accelerator: Accelerator, *tensors: Tensor) -> None:
    """Sum each of `tensors` (CPU metric sums, any shapes) in place over the processes; nothing in one process.

    One all-reduce of them all, flattened into one float64 vector on the accelerator's device (see `all_gather`).
    """
    if accelerator.num_processes == 1:
        return
    flat = torch.cat([tensor.detach().reshape(-1).double() for tensor in tensors]).to(accelerator.device)
    dist.all_reduce(flat)
    parts = flat.cpu().split([tensor.numel() for tensor in tensors])
    for tensor, part in zip(tensors, parts, strict=True):
        tensor.copy_(part.view_as(tensor))
