"""``bitfit`` and ``lora``: parameter-efficient fine-tuning as tlbench strategies.

Written against the public plugin API only (``tlbench.hookimpl`` and
``tlbench.types``). Both use the strategy hook ``adapt(built, params)``: it gets the
backbone built for the trial and returns an :class:`~tlbench.types.Adapted`, the
(possibly changed) model and the parameters that train in every phase on top of
the phases' unfrozen groups. Their phases freeze every backbone group, so what
trains is exactly the head plus those parameters.

- **BitFit** (Ben Zaken et al., 2022): only biases and normalization weights of the
  backbone train, with the new head.
- **LoRA** (Hu et al., 2022): each ``nn.Linear`` and each ungrouped ``nn.Conv2d`` of
  the backbone gets a trainable low-rank update ``B @ A`` (rank ``r``, scaled by
  ``alpha / r``; ``B`` starts at zero, so training starts from the pretrained
  function); the original weights stay frozen. Rank and alpha are searched.
  ``layers: attention`` adapts only the attention's query, key and value projections
  (Linear layers named ``query``/``key``/``value``, ``q_proj``/``k_proj``/``v_proj``
  or ``qkv``: BERT-family encoders, timm's ViTs), as the LoRA paper does.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tlbench import hookimpl
from tlbench.types import Adapted, BuiltBackbone, Phase, Strategy, UserError

TLBENCH_PLUGIN_API = (
    1,
    1,
)  # Strategy.adapt  # the oldest tlbench plugin API this plugin works with (1.4 adds text, which it serves unchanged)

NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
LAYERS = ("all", "linear", "conv", "attention")
ATTENTION = ("query", "key", "value", "q_proj", "k_proj", "v_proj", "qkv")  # names of attention projections


@hookimpl
def tlbench_strategies():
    yield Strategy(
        name="bitfit",
        options={"epochs": 3, "lr_bias": [1e-4, 1e-1], "lr_head": [1e-3, 1e-1]},
        suggest=lambda space, o: {
            "epochs": space.suggest("epochs", o["epochs"]),
            "lr_bias": space.suggest("lr_bias", o["lr_bias"], log=True),
            "lr_head": space.suggest("lr_head", o["lr_head"], log=True),
        },
        phases=lambda p, n: [Phase("bitfit", p["epochs"], n, p["lr_bias"], p["lr_head"])],
        adapt=bitfit,
        description="BitFit: only the backbone's biases and norm weights train, with the new head",
    )
    yield Strategy(
        name="lora",
        options={
            "epochs": 3,
            "rank": {"choices": [2, 4, 8, 16]},
            "alpha": {"choices": [4, 8, 16, 32]},
            "lr_lora": [1e-4, 3e-2],
            "lr_head": [1e-3, 1e-1],
            "layers": "all",
        },
        suggest=_suggest_lora,
        phases=lambda p, n: [Phase("lora", p["epochs"], n, p["lr_lora"], p["lr_head"])],
        adapt=lora,
        description="LoRA: frozen backbone, trainable low-rank updates on its linear and conv layers, or attention only (rank, alpha searched)",
    )


def _suggest_lora(space, o: Mapping[str, Any]) -> dict[str, Any]:
    if o["layers"] not in LAYERS:
        raise UserError(f"layers: must be one of {', '.join(LAYERS)}, got {o['layers']!r}")
    return {
        "epochs": space.suggest("epochs", o["epochs"]),
        "rank": space.suggest("rank", o["rank"]),
        "alpha": space.suggest("alpha", o["alpha"]),
        "lr_lora": space.suggest("lr_lora", o["lr_lora"], log=True),
        "lr_head": space.suggest("lr_head", o["lr_head"], log=True),
        "layers": o["layers"],
    }


def _backbone_modules(built: BuiltBackbone):
    """(name, module) of every backbone module, the head's excluded."""
    head = set(built.head)
    for name, module in built.model.named_modules():
        own = [f"{name}.{p}" if name else p for p, _ in module.named_parameters(recurse=False)]
        if own and any(p in head for p in own):
            continue
        yield name, module, own


def bitfit(built: BuiltBackbone, params: Mapping[str, Any]) -> Adapted:
    trainable = []
    for _, module, own in _backbone_modules(built):
        if isinstance(module, NORMS):
            trainable += own
        else:
            trainable += [p for p in own if p.rsplit(".", 1)[-1] == "bias"]
    return Adapted(built=built, trainable=tuple(trainable))


def lora(built: BuiltBackbone, params: Mapping[str, Any]) -> Adapted:
    rank, alpha, layers = int(params["rank"]), float(params["alpha"]), params.get("layers", "all")
    added: dict[str, list[str]] = {}  # the adapted layer's weight name -> its LoRA parameter names
    for name, module, _ in list(_backbone_modules(built)):
        attention = name.rsplit(".", 1)[-1] in ATTENTION
        if isinstance(module, nn.Linear) and (layers in ("all", "linear") or (layers == "attention" and attention)):
            _add_lora(module, rank, alpha, module.in_features, module.out_features)
        elif isinstance(module, nn.Conv2d) and module.groups == 1 and layers in ("all", "conv"):
            _add_lora(module, rank, alpha, module.in_channels, module.out_channels)
        else:
            continue
        prefix = f"{name}." if name else ""
        added[f"{prefix}weight"] = [f"{prefix}lora_A", f"{prefix}lora_B"]
    if not added:
        what = {"all": "linear or conv", "attention": f"attention projection ({', '.join(ATTENTION)})"}.get(
            layers, layers
        )
        raise UserError(f"lora: the backbone has no {what} layer to adapt")
    # each LoRA factor joins the group of the layer it adapts: groups still cover every parameter once
    groups = tuple(tuple(n for p in group for n in (p, *added.get(p, ()))) for group in built.groups)
    new = dataclasses.replace(built, groups=groups)  # its inputs (image data config, a text tokenizer) unchanged
    return Adapted(built=new, trainable=tuple(n for names in added.values() for n in names))


def _add_lora(module: nn.Module, rank: int, alpha: float, fan_in: int, fan_out: int) -> None:
    """Registers ``lora_A`` and ``lora_B`` on the layer itself, so that every existing
    parameter keeps its name, and adds their update to the layer's output."""
    weight = module.weight
    if isinstance(module, nn.Conv2d):
        a_shape = (rank, fan_in, *module.kernel_size)
        b_shape = (fan_out, rank, 1, 1)
    else:
        a_shape, b_shape = (rank, fan_in), (fan_out, rank)
    a = torch.empty(a_shape, device=weight.device, dtype=weight.dtype)
    nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # as nn.Linear initializes its weight
    module.register_parameter("lora_A", nn.Parameter(a))
    module.register_parameter("lora_B", nn.Parameter(torch.zeros(b_shape, device=weight.device, dtype=weight.dtype)))
    module.lora_scale = alpha / rank
    module.register_forward_hook(_lora_update)


def _lora_update(module: nn.Module, inputs, output):
    if getattr(module, "_lora_inside", False):  # the call below, through this same hook
        return None
    a, b = module.lora_A, module.lora_B
    plain_conv = type(module).forward is nn.Conv2d.forward and module.padding_mode == "zeros"
    if isinstance(module, nn.Conv2d) and plain_conv:  # low rank: a k x k conv to r channels, then 1 x 1
        low = F.conv2d(inputs[0], a, None, module.stride, module.padding, module.dilation)
        update = F.conv2d(low, b)
    elif isinstance(module, nn.Conv2d):
        # A subclass convolves its own way (timm's Conv2dSame pads in forward): the update as a
        # weight, through the layer's own forward. conv(x, W) + conv(x, dW) = conv(x, W + dW),
        # at the cost of one more convolution of the layer's size.
        delta = (b.flatten(1) @ a.flatten(1)).view_as(module.weight)
        replaced = {"weight": delta} | ({"bias": torch.zeros_like(module.bias)} if module.bias is not None else {})
        module._lora_inside = True
        try:
            update = torch.func.functional_call(module, replaced, inputs)
        finally:
            module._lora_inside = False
    else:
        update = F.linear(F.linear(inputs[0], a), b)
    return output + module.lora_scale * update
