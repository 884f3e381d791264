"""Built-in backbones: any timm model (``timm:<name>``) and any torchvision
classification model (``torchvision:<name>``).

Weights: ``pretrained: true`` uses the library's own mechanism (Hugging Face hub
or local cache for timm, torch.hub cache for torchvision); ``weights: <file>``
loads a local safetensors file or torch checkpoint (``weights_only=True``);
``pretrained: false`` is random init. Weights that cannot be had stop the run
with a message; there is no fallback to random weights.

``build_timm`` and ``load_weights`` are public so that plugins can build on them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tlbench import hookimpl
from tlbench.types import Backbone, BackboneRequest, BuiltBackbone, DataConfig, UserError

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
TIMM_OPTIONS = {  # backbone options timm models take (timm.create_model keyword arguments)
    "drop_rate": "dropout before the classifier, in [0, 1) (the model's default)",
    "drop_path_rate": "stochastic depth: chance a residual block is skipped in training, in [0, 1) (the model's default)",
}


@hookimpl
def tlbench_backbones():
    yield Backbone(
        name="timm",
        build=build_timm,
        family=True,
        known=_timm_known,
        names=_timm_names,
        options=TIMM_OPTIONS,
        description="any timm model: timm:<model>[.<pretrained tag>]",
    )
    yield Backbone(
        name="torchvision",
        build=build_torchvision,
        family=True,
        known=_torchvision_known,
        names=_torchvision_names,
        description="any torchvision classification model: torchvision:<model>",
    )


# --------------------------------------------------------------------------- timm


def _timm_known(model: str) -> bool:
    import timm

    return timm.is_model(model.split(".")[0])


def _timm_names() -> list[str]:
    import timm

    return timm.list_models()


def build_timm(request: BackboneRequest, convert: Callable[[dict, Any], dict] | None = None) -> BuiltBackbone:
    """Build a timm model with a fresh head; groups come from timm's ``group_matcher``.

    ``convert(state, model)`` maps a loaded weights file's state dict to the
    model's key layout (for checkpoints from other projects); it should raise
    UserError when the file does not fit.
    """
    import timm

    hub = request.pretrained and request.weights is None
    kwargs = timm_options(request)
    try:
        model = timm.create_model(request.model, pretrained=hub, num_classes=request.num_classes, **kwargs)
    except Exception as exc:
        if hub and _looks_like_download_failure(exc):
            raise UserError(
                f"backbone timm:{request.model}: pretrained weights could not be downloaded or found in the cache "
                f"({type(exc).__name__}: {str(exc)[:100]}); set 'weights: <file>' to a local .safetensors/.pth file, "
                "run once with a network to fill the Hugging Face cache, or set 'pretrained: false' for random init "
                "(HF_HUB_OFFLINE=1 makes this check immediate)"
            ) from exc
        raise
    if request.weights is not None:
        state = load_weights(request.weights, f"timm:{request.model}")
        if convert is not None:
            state = convert(state, model)
        _load_into(model, state, request, reset=lambda: model.reset_classifier(request.num_classes))
    return BuiltBackbone(
        model=model,
        groups=timm_groups(model),
        head=_head_names(model, model.get_classifier()),
        data_config=_timm_data_config(model),
    )


def timm_options(request: BackboneRequest) -> dict[str, float]:
    """The request's TIMM_OPTIONS, checked: rates in [0, 1)."""
    out = {}
    for key, value in request.options.items():
        if key not in TIMM_OPTIONS:  # the host checks names; a caller outside it may not
            raise UserError(f"{key}: unknown option; timm backbones accept: {', '.join(TIMM_OPTIONS)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise UserError(f"{key}: must be a number in [0, 1), got {value!r}")
        out[key] = float(value)
    return out


def _looks_like_download_failure(exc: BaseException) -> bool:
    names = {type(e).__name__ for e in _chain(exc)}
    hints = ("Connection", "Offline", "LocalEntryNotFound", "Timeout", "HTTP", "URLError", "Hub", "RepositoryNotFound")
    return any(h in n for n in names for h in hints) or isinstance(exc, (OSError, RuntimeError))


def _chain(exc: BaseException | None):
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


def timm_groups(model) -> tuple[tuple[str, ...], ...]:
    """Backbone parameter names grouped by timm's fine-grained group matcher, head excluded."""
    from timm.models import group_parameters

    head = set(_head_names(model, model.get_classifier()))
    grouped = group_parameters(model, model.group_matcher(coarse=False))
    groups = []
    for _, names in sorted(grouped.items()):
        kept = tuple(n for n in names if n not in head)
        if kept:
            groups.append(kept)
    return tuple(groups)


def _timm_data_config(model) -> DataConfig:
    import timm.data

    cfg = timm.data.resolve_model_data_config(model)
    return DataConfig(
        input_size=int(cfg["input_size"][-1]),
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        interpolation=cfg.get("interpolation", "bicubic"),
        crop_pct=float(cfg.get("crop_pct", 1.0)),
    )


# --------------------------------------------------------------------------- weights files


def load_weights(path: Path, what: str) -> dict:
    """A state dict from a .safetensors file or a torch checkpoint (``weights_only=True``)."""
    import torch

    if not path.is_file():
        raise UserError(
            f"backbone {what}: weights file {path} does not exist; fix 'weights:' or set 'pretrained: true'"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(
            f"backbone {what}: cannot read weights file {path} ({type(exc).__name__}: {str(exc)[:120]}); "
            "expected a .safetensors file or a torch state dict"
        ) from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise UserError(f"backbone {what}: {path} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _load_into(model, state: Mapping, request: BackboneRequest, reset: Callable[[], None]) -> None:
    """Load ``state`` into the model as built with its original head, then reset the head.

    The file may carry the original classifier (any number of classes) or none.
    """
    own = model.state_dict()
    head = set(_head_names(model, _classifier(model)))
    head_keys = {k for k in own if k in head or any(k.startswith(h.rsplit(".", 1)[0] + ".") for h in head)}
    body = {k: v for k, v in state.items() if k not in head_keys}
    what = f"{request.model} from {request.weights}"
    unexpected = sorted(set(body) - set(own))
    missing = sorted(set(own) - set(body) - head_keys)
    wrong = [k for k in body if k in own and tuple(body[k].shape) != tuple(own[k].shape)]
    if unexpected or missing or wrong:
        detail = (
            f"{len(missing)} missing (e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]}), "
            f"{len(wrong)} of wrong shape (e.g. {wrong[:2]})"
        )
        raise UserError(f"backbone {what}: the weights do not fit this architecture: {detail}")
    model.load_state_dict(body, strict=False)
    reset()


def _classifier(model):
    return model.get_classifier() if hasattr(model, "get_classifier") else _last_linear(model)[1]


def _head_names(model, head) -> tuple[str, ...]:
    ids = {id(p) for p in head.parameters()}
    return tuple(n for n, p in model.named_parameters() if id(p) in ids)


# --------------------------------------------------------------------------- torchvision


def _torchvision_names() -> list[str]:
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def _torchvision_known(model: str) -> bool:
    return model in _torchvision_names()


def build_torchvision(request: BackboneRequest) -> BuiltBackbone:
    """A torchvision classifier with its last Linear replaced; groups are its top-level stages."""
    import torchvision

    weights_enum = torchvision.models.get_model_weights(request.model)
    hub = request.pretrained and request.weights is None
    try:
        model = torchvision.models.get_model(request.model, weights="DEFAULT" if hub else None)
    except Exception as exc:
        if hub and _looks_like_download_failure(exc):
            raise UserError(
                f"backbone torchvision:{request.model}: pretrained weights could not be downloaded or found in "
                f"the torch hub cache ({type(exc).__name__}: {str(exc)[:100]}); set 'weights: <file>' to a local "
                "state dict, "
                "or set 'pretrained: false' for random init"
            ) from exc
        raise
    if request.weights is not None:
        state = load_weights(request.weights, f"torchvision:{request.model}")
        _load_into(model, state, request, reset=lambda: _replace_last_linear(model, request.num_classes))
    else:
        _replace_last_linear(model, request.num_classes)
    head = _head_names(model, _last_linear(model)[1])
    return BuiltBackbone(
        model=model,
        groups=torchvision_groups(model, set(head)),
        head=head,
        data_config=_torchvision_data_config(weights_enum),
    )


def _last_linear(model):
    import torch.nn as nn

    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise UserError(f"backbone {type(model).__name__}: no Linear classifier to replace; pick another model")
    return linears[-1]


def _replace_last_linear(model, num_classes: int) -> None:
    import torch.nn as nn

    name, old = _last_linear(model)
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    setattr(parent, name.rpartition(".")[2], nn.Linear(old.in_features, num_classes))


def torchvision_groups(model, head: set[str]) -> tuple[tuple[str, ...], ...]:
    """Top-level children in order, with ``features`` and ``encoder.layers`` split into stages.

    Parameters held directly by a container (a class token, a position
    embedding) sit on the input side, in a group of their own at the front.
    """
    stages = [stage for name, child in model.named_children() for stage in _stages(name, child)]
    grouped: dict[str, list[str]] = {stage: [] for stage in stages}
    loose: list[str] = []
    for name, _ in model.named_parameters():
        if name in head:
            continue
        owner = next((s for s in stages if name.startswith(s + ".")), None)
        (grouped[owner] if owner else loose).append(name)
    groups = [tuple(names) for names in grouped.values() if names]
    return tuple([tuple(loose)] + groups if loose else groups)


def _stages(name: str, child) -> list[str]:
    subs = dict(child.named_children())
    if name == "features" and len(subs) > 1:
        return [f"{name}.{sub}" for sub in subs]
    if name == "encoder" and "layers" in subs:
        return [f"encoder.layers.{sub}" for sub, _ in subs["layers"].named_children()] + [
            f"encoder.{sub}" for sub in subs if sub != "layers"
        ]
    return [name]


def _torchvision_data_config(weights_enum) -> DataConfig:
    from torchvision.transforms import InterpolationMode

    tf = weights_enum.DEFAULT.transforms()
    crop = int(tf.crop_size[0])
    resize = int(tf.resize_size[0])
    interp = tf.interpolation.value if isinstance(tf.interpolation, InterpolationMode) else "bilinear"
    return DataConfig(
        input_size=crop,
        mean=tuple(tf.mean) or _IMAGENET_MEAN,
        std=tuple(tf.std) or _IMAGENET_STD,
        interpolation=interp,
        crop_pct=crop / resize,
    )
