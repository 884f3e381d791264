"""Compute cost of a model: parameters, FLOPs, throughput, latency, memory, device.

FLOPs follow the convention FLOPs = 2 x MACs (one multiply-add is two
floating-point operations), as counted by ``torch.utils.flop_counter``: matrix
products and convolutions, which dominate; norms and activations are not counted.
"""

from __future__ import annotations

import math
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count


def _conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                         _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:  # fmt: skip
    """Gradients of input and of weight each cost as many multiply-adds as the forward conv.

    torch's own formula ignores ``groups``: it counts a depthwise conv's backward
    as if every channel saw every other one, C times too much (seen with torch 2.14).
    """
    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed=transposed)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


def counting() -> FlopCounterMode:
    """A context that counts the FLOPs run inside it (``.get_total_flops()``), depthwise backward fixed."""
    return FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: _conv_backward_flops})


def count_params(model: nn.Module, names: set[str] | None = None) -> int:
    """All parameters, or those whose names are in ``names``."""
    return sum(p.numel() for n, p in model.named_parameters() if names is None or n in names)


@torch.no_grad()
def forward_flops(model: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward pass per example of the batch ``x`` (Inputs.example: one
    image at the trials' resolution, one text at the configured sequence length)."""
    was_training = model.training
    model.eval()
    x = x.float() if x.is_floating_point() else x  # cached features may be kept in half precision
    with counting() as counter:
        model(x)
    model.train(was_training)
    return int(counter.get_total_flops() / len(x))


def train_step_flops(model: nn.Module, x: torch.Tensor) -> float:
    """FLOPs of one training step (forward + backward) per example of the batch ``x``
    (made-up inputs, or cached features; floating point ones in fp32), with the
    model's current ``requires_grad`` flags: a frozen prefix costs no backward pass.
    The model's buffers (batch-norm statistics), gradients, mode and the random
    state are as they were afterwards.
    """
    was_training = model.training
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    grads = {name: p.grad for name, p in model.named_parameters()}
    device = x.device
    x = x.float() if x.is_floating_point() else x
    target = torch.zeros(len(x), dtype=torch.long, device=device)
    try:
        model.train()
        # dropout must not move the random state training draws from
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), counting() as counter:
            loss = nn.functional.cross_entropy(model(x), target)
            if loss.requires_grad:
                loss.backward()
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
        for name, p in model.named_parameters():
            p.grad = grads[name]
        model.train(was_training)
    return counter.get_total_flops() / len(x)


@torch.no_grad()
def inference_speed(
    model: nn.Module,
    example: Callable[[int], torch.Tensor],
    device: torch.device,
    batch_size: int,
    autocast_dtype: torch.dtype | None = None,
    budget_s: float = 0.3,
) -> tuple[float, float]:
    """(throughput in examples/s at ``batch_size``, median latency in ms for one example).

    ``example(n)``: a batch of n made-up inputs (Inputs.example at the trials' size),
    moved to the device first; each measurement is warmed up, then repeated for
    about ``budget_s`` seconds (at least 3 times).
    """
    model.eval()

    def timed(n: int) -> list[float]:
        x = example(n).to(device)
        x = x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
        times: list[float] = []
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            for i in range(1000):
                start = time.perf_counter()
                model(x)
                _sync(device)
                if i >= 1:  # the first call is warm-up
                    times.append(time.perf_counter() - start)
                if len(times) >= 3 and sum(times) >= budget_s:
                    break
        return times

    batch_times = timed(batch_size)
    throughput = batch_size / statistics.median(batch_times)
    latency_ms = 1000 * statistics.median(timed(1))
    return throughput, latency_ms


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def first_use(model: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Parameter name -> the position, in one forward pass of ``x``, of the first call of
    the module that owns it (``math.inf``: never called). What the group-order check
    (tlbench.host.contract.group_order_problem) reads."""
    return _traced(model, x)[1]


def forward_probe(model: nn.Module, x: torch.Tensor) -> tuple[float, dict[str, float]]:
    """One forward pass of the batch ``x`` (one made-up input) in eval mode: (bytes every
    module's output takes, :func:`first_use` of every parameter)."""
    was_training = model.training
    model.eval()
    try:
        return _traced(model, x.to(next(model.parameters()).device))
    finally:
        model.train(was_training)


@torch.no_grad()
def _traced(model: nn.Module, x: torch.Tensor) -> tuple[float, dict[str, float]]:
    total = [0]
    calls: dict[str, int] = {}

    def count(module, args, out) -> None:
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                total[0] += t.numel() * t.element_size()

    def seen(name: str) -> None:  # a pre-hook that returns something replaces the input: this returns None
        calls.setdefault(name, len(calls))

    modules = dict(model.named_modules())
    hooks = [m.register_forward_hook(count) for m in modules.values() if not list(m.children())]
    hooks += [m.register_forward_pre_hook(lambda m, a, n=name: seen(n)) for name, m in modules.items()]
    try:
        model(x)
    finally:
        for hook in hooks:
            hook.remove()
    owners = {}
    for name, module in modules.items():
        for p, _ in module.named_parameters(recurse=False):
            owners[f"{name}.{p}" if name else p] = calls.get(name, math.inf)
    return float(total[0]), owners


def available_memory(device: torch.device) -> int | None:
    """Total bytes of a CUDA device, or the machine's physical memory for the CPU (None if unknown)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[1]
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """(megabytes, what was measured): CUDA max allocated since the last reset,
    or on CPU the process's peak resident set size (it never goes down)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return peak * scale / 2**20, "process_peak_rss"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {_cpu_model()} ({torch.get_num_threads()} threads)"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
