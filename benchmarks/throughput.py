"""Training throughput the way timm's benchmark.py measures it: synthetic input already on
the device, a few warm-up steps, then timed steps between device synchronizations.

    python benchmarks/throughput.py                        # efficientnet_b0 and resnet50, 224 px, batch 256
    python benchmarks/throughput.py --device cpu --batch 8 --steps 3 --warmup 1

AMP as the engine picks it (bf16 where supported, else fp16 with a grad scaler; fp32 on
CPU), channels_last, SGD as timm's benchmark uses. Random init: throughput does not
depend on the weights, so nothing is downloaded. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

from tlbench.engine import basics, cost

ROOT = Path(__file__).resolve().parent.parent


def train_throughput(name: str, device: torch.device, batch: int, resolution: int, warmup: int, steps: int) -> dict:
    import timm

    dtype = basics.autocast_dtype(device)
    model = (
        timm.create_model(name, pretrained=False, num_classes=1000)
        .to(device, memory_format=torch.channels_last)
        .train()
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(enabled=dtype == torch.float16)
    x = torch.randn(batch, 3, resolution, resolution, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=device)

    for _ in range(warmup):
        plain_step(model, x, y, optimizer, scaler, dtype)
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        plain_step(model, x, y, optimizer, scaler, dtype)
    sync(device)
    seconds = time.perf_counter() - start
    return {
        "model": name,
        "images_per_s": batch * steps / seconds,
        "step_ms": 1000 * seconds / steps,
        "batch": batch,
        "resolution": resolution,
        "precision": basics.precision_name(dtype),
        "peak_memory_mb": cost.peak_memory_mb(device)[0],
    }


def plain_step(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer, scaler, dtype: torch.dtype | None
) -> None:
    """The plainest training step: autocast forward, cross-entropy, scaled backward, step."""
    with torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        loss = nn.functional.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["efficientnet_b0", "resnet50"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "throughput.json")
    args = parser.parse_args(argv)
    device = basics.pick_device(args.device)
    torch.backends.cudnn.benchmark = True
    rows = []
    for name in args.models:
        cost.reset_peak_memory(device)
        rows.append(train_throughput(name, device, args.batch, args.resolution, args.warmup, args.steps))
        r = rows[-1]
        print(f"{name:20s} {r['images_per_s']:9.1f} img/s  {r['step_ms']:8.1f} ms/step  batch {r['batch']} "
              f"{r['resolution']} px {r['precision']}  peak {r['peak_memory_mb']:.0f} MB")  # fmt: skip
    report = {"device": cost.device_name(device), "torch": torch.__version__, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"{report['device']} · torch {report['torch']} · wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
