"""The training engine: runs a strategy's phases on a built backbone and measures them.

Device auto-selection, AMP on CUDA (bf16 where supported, else fp16 with a
grad scaler), channels_last memory format (faster convolutions on CUDA, and
with oneDNN on CPU too: +15 % training, +30 % inference for EfficientNet-Lite0
at 64 px on a 2-core EPYC), seeded and reproducible on CPU.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Sequence

import torch
from torch import nn

from tlbench import _moved
from tlbench.base import interrupts
from tlbench.engine import cost, features
from tlbench.engine.basics import (
    EpochOrder,
    FitResult,
    TrainSettings,
    TrialFailed,
    autocast_dtype,
    precision_name,
    set_trainable,
    to_device,
)
from tlbench.engine.inputs import inputs_of
from tlbench.engine.phasedata import (
    Examples,
    PhaseData,
    phase_data,
    phase_off,
)
from tlbench.types import BuiltBackbone, DatasetSplits, Phase


def fit(
    built: BuiltBackbone,
    splits: DatasetSplits,
    phases: Sequence[Phase],
    settings: TrainSettings,
    on_epoch: Callable[[int, float], None] = lambda epoch, acc: None,
    always: Collection[str] = (),
    on_spent: Callable[[float, float], None] = lambda seconds, flops: None,
    extra_loss: Callable | None = None,
    on_rates: Callable[[dict[str, list[float]]], None] = lambda rates: None,
    extra_loss_cacheable: bool = False,
) -> FitResult:
    """Train through ``phases``; ``on_epoch(epoch, val_accuracy)`` may raise to stop (pruning).
    ``on_spent(train_seconds, train_flops)`` is told the cost so far before each ``on_epoch``,
    ``on_rates(rates)`` the learning rates the epoch's steps applied: optimizer group name
    (:func:`make_optimizer`) -> one rate per step, in step order.
    ``extra_loss(model, logits, targets)``: a term added to every step's loss (Adapted.extra_loss);
    ``extra_loss_cacheable``: it reads only the logits, the targets and trainable parameters
    (Adapted.extra_loss_reads_only_trainable), so the feature cache may stay on.

    Each phase trains on cached outputs of its frozen prefix when it can
    (``settings.cache`` set, no augmentation, no extra loss, batch norm not in
    "train" mode, features within the cache's memory bound), else on examples
    through the transforms.
    """
    active = [phase for phase in phases if phase.epochs > 0]
    if not active:
        raise TrialFailed("the strategy gave no phase with epochs > 0")
    torch.manual_seed(settings.seed)
    dtype = autocast_dtype(settings.device)
    model = built.model.to(settings.device, memory_format=torch.channels_last)
    inputs = inputs_of(built)
    train_tf, eval_tf = inputs.transforms(settings.size, settings.augment)
    order = EpochOrder(len(splits.train), torch.Generator().manual_seed(settings.seed))
    run = _Run(
        model,
        settings,
        dtype,
        Examples(splits, train_tf, eval_tf, settings, order),
        len(splits.train),
        on_epoch,
        on_spent,
    )
    run.on_rates = on_rates
    run.n_val = len(splits.val)
    probe = inputs.example(2, settings.size).to(settings.device)
    run.extra_loss = extra_loss
    updated: set[str] = set()
    spans = schedule_spans(active, train_batches(len(splits.train), settings.batch_size))
    for i, phase in enumerate(active):
        trainable = set_trainable(model, built, phase.frozen_groups, always)
        updated |= trainable
        finder = features.find_cut if settings.cache is None else settings.cache.find_cut
        cut, _ = finder(model, trainable, probe)
        off = phase_off(phase, None if extra_loss_cacheable else extra_loss)
        data, use, extraction = phase_data(
            model,
            cut,
            splits,
            run.examples,
            eval_tf,
            settings,
            dtype,
            order,
            phase.name,
            off,
            augmenting=train_tf is not eval_tf,
        )
        run.sources.append(use)
        run.seconds += extraction
        run.phase(
            phase,
            make_optimizer(model, built, trainable, phase, settings.weight_decay),
            cut,
            data,
            probe,
            last=phase is active[-1],
            factor=spans[i],
        )
    return FitResult(
        val_curve=run.curve,
        test_correct=run.test,
        train_seconds=run.seconds,
        train_flops=run.flops,
        trainable_params=cost.count_params(model, updated),
        precision=precision_name(dtype),
        cache=tuple(run.sources),
        test_curve=run.test_curve if settings.test_curve else None,
        val_flops=run.val_flops,
    )


class _Run:
    """One fit's running state: the curve so far, time and FLOPs spent, where data came from."""

    def __init__(
        self, model: nn.Module, settings: TrainSettings, dtype, examples: Examples, n_train: int, on_epoch, on_spent
    ):
        self.model, self.settings, self.dtype, self.examples, self.on_epoch = model, settings, dtype, examples, on_epoch
        self.on_spent = on_spent
        self.n_train, self.n_val = n_train, 0
        self.scaler = torch.amp.GradScaler(enabled=dtype == torch.float16)
        self.curve: list[float] = []
        self.test: list[bool] = []
        self.test_curve: list[float] = []  # with TrainSettings.test_curve
        self.seconds = self.flops = self.val_flops = 0.0
        self.sources: list[features.CacheUse] = []
        self.extra_loss = None  # Adapted.extra_loss
        self.on_rates = lambda rates: None

    def phase(
        self, phase: Phase, optimizer, cut: features.Cut, data: PhaseData, probe: torch.Tensor, last: bool, factor=None
    ) -> None:
        """Train the phase's epochs; ``probe``: a batch of made-up inputs (Inputs.example) to meter a step with;
        ``factor``: step -> the factor on the rates (default: the phase's own schedule)."""
        s, device, dtype = self.settings, self.settings.device, self.dtype
        per_epoch = train_batches(self.n_train, s.batch_size)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor or lr_factor(phase, per_epoch))
        with data.model(self.model, cut) as net:
            runner = torch.compile(net) if s.compile else net
            step_flops = data.step_flops(net, probe)
            self.flops += data.prefix_flops * self.n_train  # the frozen prefix ran once per training example
            eval_flops = data.forward_flops(net, probe)  # the validation pass: the suffix every epoch, the prefix once
            self.val_flops += data.prefix_flops * self.n_val
            for _ in range(phase.epochs):
                start = time.perf_counter()
                rates: dict[str, list[float]] = {group["name"]: [] for group in optimizer.param_groups}
                n = _train_epoch(
                    runner,
                    net,
                    cut,
                    data,
                    optimizer,
                    schedule,
                    self.scaler,
                    device,
                    dtype,
                    phase,
                    self.extra_loss,
                    rates,
                )
                self.seconds += time.perf_counter() - start
                self.flops += step_flops * n
                self.curve.append(evaluate(runner, data.eval("val"), device, dtype, data.channels_last))
                self.val_flops += eval_flops * self.n_val
                if s.test_curve:  # before on_epoch, which may stop the trial; the last epoch's pass is the test result
                    self.test = correctness(runner, data.eval("test"), device, dtype, data.channels_last)
                    self.test_curve.append(sum(self.test) / len(self.test))
                self.on_spent(self.seconds, self.flops)
                self.on_rates(rates)
                self.on_epoch(len(self.curve), self.curve[-1])
            if last and not s.test_curve:
                self.test = correctness(runner, data.eval("test"), device, dtype, data.channels_last)


def _train_mode(model: nn.Module, cut: features.Cut | None = None, batchnorm: str = "auto") -> None:
    """Train mode, except (Phase.batchnorm "auto") the frozen prefix (eval: no dropout, no
    statistics updates) and norm layers whose parameters are all frozen: their running
    statistics stay as loaded, as a frozen layer should. "eval": every batch-norm layer
    in eval mode, trained ones too (statistics as loaded: small batches). "train": every
    layer in train mode, frozen ones too (statistics follow the new data)."""
    model.train()
    if batchnorm == "train":
        return
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._NormBase):
            params = list(module.parameters(recurse=False))
            if batchnorm == "eval" or (params and not any(p.requires_grad for p in params)):
                module.eval()
    features.set_prefix_eval(model, cut)


def make_optimizer(model: nn.Module, built: BuiltBackbone, trainable: set[str], phase: Phase, weight_decay: float):
    """The phase's optimizer: AdamW (or SGD with Nesterov momentum), one parameter group per
    learning rate. The one rule (docs/plugins.md, "What a phase means"): the head at
    ``lr_head``; a parameter of an unfrozen backbone group at its group's ``group_lrs``
    entry, or ``lr_backbone`` without ``group_lrs``; a parameter that trains only because
    a strategy's ``Adapted.trainable`` names it (in a frozen group, or in none) at
    ``lr_backbone``, so an adapter inside frozen groups trains even when their group
    rates are 0. Weight decay ``phase.weight_decay`` (None: the training setting) on
    every trainable parameter."""
    head = set(built.head)
    group_of = {n: i for i, group in enumerate(built.groups) for n in group}
    by_lr: dict[tuple[bool, float], list] = {}
    sources: dict[tuple[bool, float], set[str]] = {}  # what each rate is: head, backbone, group <i>
    for name, param in model.named_parameters():
        if name not in trainable:
            continue
        if name in head:
            lr, source = phase.lr_head, "head"
        elif phase.group_lrs is not None and group_of.get(name, -1) >= phase.frozen_groups:
            lr, source = float(phase.group_lrs[group_of[name]]), f"group {group_of[name]}"
        else:
            lr, source = phase.lr_backbone, "backbone"
        by_lr.setdefault((name in head, lr), []).append(param)
        sources.setdefault((name in head, lr), set()).add(source)
    groups = [
        {"params": params, "lr": lr, "name": _group_name(sources[(is_head, lr)])}
        for (is_head, lr), params in sorted(by_lr.items(), key=lambda kv: kv[0][0])
    ]
    decay = weight_decay if phase.weight_decay is None else phase.weight_decay
    if phase.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=phase.lr_backbone, momentum=phase.momentum, nesterov=phase.momentum > 0, weight_decay=decay
        )
    return torch.optim.AdamW(groups, weight_decay=decay)


def _group_name(sources: set[str]) -> str:
    """An optimizer group's name: "head", "backbone", or the backbone groups sharing its rate
    ("groups 3, 4"; a rate shared by group_lrs and lr_backbone is named by both)."""
    numbered = sorted(int(s.split()[1]) for s in sources if s.startswith("group "))
    named = sorted(s for s in sources if not s.startswith("group "))
    if numbered:
        named.append(("group " if len(numbered) == 1 else "groups ") + ", ".join(map(str, numbered)))
    return " + ".join(named)


def schedule_spans(phases: Sequence[Phase], batches_per_epoch: int) -> list[Callable[[int], float]]:
    """For each phase, its step -> factor: its own schedule (:func:`lr_factor`), or, for a
    phase with ``schedule_continues``, the schedule of the phase that began the span,
    stretched over the span's steps and counted on from where the phase before it ended."""
    out: list[Callable[[int], float]] = []
    i = 0
    while i < len(phases):
        j = i + 1
        while j < len(phases) and phases[j].schedule_continues:
            j += 1
        span = phases[i:j]
        steps = sum(p.epochs for p in span) * batches_per_epoch
        whole = lr_factor(span[0], batches_per_epoch, steps=steps)
        offset = 0
        for p in span:
            out.append((lambda f, o: lambda step: f(o + step))(whole, offset) if len(span) > 1 else whole)
            offset += p.epochs * batches_per_epoch
        i = j
    return out


def lr_factor(phase: Phase, batches_per_epoch: int, steps: int | None = None) -> Callable[[int], float]:
    """Step -> the factor on each learning rate: a linear warm-up over
    ``phase.warmup_epochs`` (from 1/(w+1) of the rate, reaching it at step w), then the
    schedule over the remaining steps (cosine or linear to 0, or constant). ``steps``:
    the schedule's length when it spans several phases (default: this phase's)."""
    steps = max(1, phase.epochs * batches_per_epoch if steps is None else steps)
    warm = min(steps - 1, round(phase.warmup_epochs * batches_per_epoch)) if phase.warmup_epochs > 0 else 0
    rest = max(1, steps - warm)

    def factor(i: int) -> float:
        if i < warm:
            return (i + 1) / (warm + 1)
        if phase.schedule == "constant":
            return 1.0
        if phase.schedule == "linear":
            return 1.0 - (i - warm) / rest
        return 0.5 * (1 + math.cos(math.pi * (i - warm) / rest))  # written as before API 1.3: the same floats

    return factor


def check_every(device: torch.device) -> int:
    """Steps between loss checks: every step on CPU (free), every 32 on CUDA, where
    reading a value back waits for the GPU (the check is cumulative, nothing is missed)."""
    return 1 if device.type != "cuda" else 32


def train_batches(n: int, batch_size: int) -> int:
    """Training steps per epoch. A last batch of a single example is skipped: batch norm
    in training mode cannot normalize one value per channel (torch raises), and one
    example in a step of its own is noise anyway. Datasets need 2 training examples."""
    return n // batch_size + (n % batch_size > 1)


def _train_epoch(
    runner,
    model,
    cut,
    data: PhaseData,
    optimizer,
    schedule,
    scaler,
    device,
    dtype,
    phase: Phase,
    extra_loss=None,
    rates=None,
) -> int:
    """One pass over the training data; ``runner`` is ``model`` or its compiled form;
    ``rates``: group name -> list, each step's learning rate appended."""
    _train_mode(model, None if phase.batchnorm == "train" else cut, phase.batchnorm)
    extra = None if extra_loss is None else (lambda logits, y: extra_loss(model, logits, y))
    images = steps = 0
    bad = torch.zeros((), device=device)  # first non-finite loss seen, 0 while none
    every = check_every(device)
    for x, y in data.train():
        interrupts.check()  # a safe point (see tlbench.base.interrupts)
        if len(y) == 1:  # a last batch of one example: batch norm cannot train on it (see train_batches)
            continue
        if rates is not None:  # the rates this step applies (the schedule moves them after it)
            for group in optimizer.param_groups:
                rates[group["name"]].append(group["lr"])
        try:
            loss = _train_step(
                runner,
                to_device(x, device, data.channels_last),
                y.to(device, non_blocking=True),
                optimizer,
                scaler,
                dtype,
                extra,
            )
        except torch.OutOfMemoryError as exc:
            raise TrialFailed(f"out of memory in phase {phase.name} at batch size {len(x)}") from exc
        bad = torch.where((bad == 0) & ~torch.isfinite(loss), loss, bad)
        schedule.step()
        images += len(x)
        steps += 1
        if steps % every == 0:
            _check_loss(bad, phase)
    _check_loss(bad, phase)
    return images


def _check_loss(bad: torch.Tensor, phase: Phase) -> None:
    value = bad.item()
    if value != 0:
        raise TrialFailed(
            f"loss became {value} in phase {phase.name} "
            f"(lr_backbone={phase.lr_backbone:.3g}, lr_head={phase.lr_head:.3g}); the learning rate is likely too high",
            kind="diverged",
        )


def _train_step(model, x, y, optimizer, scaler, dtype, extra=None) -> torch.Tensor:
    """One optimizer step. ``extra(logits, targets)``: a term added to the loss in fp32,
    outside autocast, before loss scaling, so that fp16's scaler scales (and unscales)
    its gradients with the cross-entropy's."""
    with torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
    if extra is not None:
        loss = loss.float() + extra(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach().float()


def evaluate(
    model: nn.Module, loader, device: torch.device, dtype: torch.dtype | None, channels_last: bool = True
) -> float:
    """Top-1 accuracy on ``loader``."""
    correct = correctness(model, loader, device, dtype, channels_last)
    return sum(correct) / max(len(correct), 1)


@torch.no_grad()
def correctness(
    model: nn.Module, loader, device: torch.device, dtype: torch.dtype | None, channels_last: bool = True
) -> list[bool]:
    """Whether each example of ``loader``, in order, is classified right (for bootstrap intervals)."""
    model.eval()
    out: list[bool] = []
    for x, y in loader:
        interrupts.check()
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(to_device(x, device, channels_last))
        out += (logits.argmax(1).cpu() == y).tolist()
    return out


# 0.6's names that left this module when it was split: still found here, with a warning
__getattr__ = _moved.forward(
    __name__,
    {
        "tlbench.engine.basics": (
            "TrialFailed",
            "TrainSettings",
            "FitResult",
            "pick_device",
            "pick_devices",
            "precision_for",
            "autocast_dtype",
            "precision_name",
            "set_trainable",
            "EpochOrder",
        ),
        "tlbench.engine.phasedata": ("frozen_features",),
    },
)
