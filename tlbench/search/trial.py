"""One trial: draw a configuration, build, adapt, train, measure, and record it.

:class:`Objective` is what Optuna calls; everything it stores goes through
:class:`tlbench.store.record.TrialRecord`. :class:`TrialResources` is what the trials of
one process share: the devices, the measurements that depend on the architecture
only, and the feature cache. The engine (:func:`tlbench.engine.train.fit`) knows nothing
of Optuna: it reports each epoch through ``on_epoch``, and pruning is decided here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import platform
import queue
import threading
import time

import optuna

from tlbench.base import interrupts
from tlbench.base.space import TrialSpace
from tlbench.base.stats import trial_value
from tlbench.engine import basics, cost, features, train
from tlbench.engine.inputs import input_size, inputs_of
from tlbench.host.contract import plugin_call
from tlbench.host.events import as_events, running
from tlbench.search import pruning
from tlbench.search.calls import adapt, build_backbone
from tlbench.search.planning import (
    Plan,
    PlannedBackbone,
    backbone_options,
    cache_dir,
    check_phases,
    strategy_phases,
    suggest_training,
)
from tlbench.search.sampling import infeasible, tell_constraints
from tlbench.search.studies import budget, derived_seed
from tlbench.store.record import WORKER, Failure, TrialRecord
from tlbench.types import DatasetSplits, UserError


class TrialResources:
    """What the trials of one process share: the devices (one trial each at a time),
    architecture-only costs measured once, and the frozen-prefix feature cache."""

    def __init__(self, plan: Plan, splits: dict[str, DatasetSplits], shelf: dict | None = None):

        self.devices = basics.pick_devices(plan.bench.training.device)
        self.free: queue.SimpleQueue = queue.SimpleQueue()
        for device in self.devices:
            self.free.put(device)
        self.measured: dict = {}
        self.lock = threading.Lock()
        self.shelf = shelf if shelf is not None else {}  # backbones the preflight built, for the screen to take
        c = plan.bench.training.cache
        self.cache = features.FeatureCache(c.memory_mb, cache_dir(plan), c.disk_mb) if c.enabled else None
        self.data_keys = {
            entry.key: features.data_fingerprint(
                json.dumps([entry.model_dump(mode="json"), plan.bench.seed], sort_keys=True),
                {name: getattr(splits[entry.key], name).ids for name in ("train", "val", "test")},
                {name: getattr(splits[entry.key], name).labels for name in ("train", "val", "test")},
            )
            for entry, _ in plan.datasets
            if entry.key in splits
        }

    def measure(self, key, fn):
        """``fn()`` the first time ``key`` is asked for, its stored value afterwards."""
        with self.lock:
            if key in self.measured:
                return self.measured[key]
        value = fn()
        with self.lock:
            return self.measured.setdefault(key, value)

    @contextlib.contextmanager
    def device(self):
        device = self.free.get()
        try:
            yield device
        finally:
            self.free.put(device)


class Objective:
    """One trial: pick backbone and strategy, draw their parameters, train, measure.

    ``repeats``: the study holds enqueued seed repeats only (see :mod:`tlbench.benchmark`).
    """

    def __init__(
        self,
        plan: Plan,
        splits: DatasetSplits,
        dataset_key: str,
        events,
        resources: TrialResources,
        repeats: bool = False,
    ):
        self.plan, self.splits, self.dataset_key, self.resources = plan, splits, dataset_key, resources
        self.events = as_events(events)  # a bare Progress works too (tests, benchmark scripts)
        self.repeats = repeats

    def __call__(self, trial: optuna.Trial) -> float:
        import torch

        surplus = self.surplus(trial)
        if surplus:
            TrialRecord(failure=Failure.SURPLUS, fail_reason=f"surplus: not run, {surplus}").write(trial)
            raise basics.TrialFailed(
                f"surplus: not run, {surplus}", kind=Failure.SURPLUS
            )  # the callback then stops the study
        TrialRecord(host=platform.node(), worker=WORKER).write(trial, "host", "worker", "version")
        with self.resources.device() as device:
            # libraries that allocate on "the current GPU" use this trial's
            with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
                try:
                    interrupts.check()  # a safe point: the trial exists, nothing is trained yet
                    return self._run(trial, device)
                except KeyboardInterrupt:  # Optuna marks it failed; this says why
                    TrialRecord(failure=Failure.INTERRUPTED, fail_reason=f"interrupted by {interrupts.what()}").write(
                        trial
                    )
                    raise

    def surplus(self, trial: optuna.Trial) -> str | None:
        """Why this trial must not run, if it must not. Workers stop once their study has
        its trials, but two may each start one more at the same moment: trial numbers
        are given out one at a time (Optuna locks the study row), so the first
        ``n_trials`` trials of the budget run and any later one is surplus."""
        if self.repeats:
            return (
                None
                if TrialRecord.from_trial(trial).repeat_of is not None
                else "every enqueued repeat was taken by other workers"
            )
        if TrialRecord.from_trial(trial).probe:
            return None  # the screen's probes run outside n_trials
        total = self.plan.bench.search.n_trials
        if total is None:
            return None
        ahead = [t for t in budget(trial.study.get_trials(deepcopy=False)) if t.number < trial.number]
        return (
            f"the study already had its {total} trials (other workers took the last ones)"
            if len(ahead) >= total
            else None
        )

    def _run(self, trial: optuna.Trial, device) -> float:
        import torch

        plan = self.plan
        bkey = trial.suggest_categorical("backbone", plan.backbones_for(self.dataset_key))
        skey = trial.suggest_categorical("strategy", list(plan.strategies))
        strategy, backbone = plan.strategies[skey], plan.backbones[bkey]
        space = TrialSpace(trial, f"{skey}.", f"strategy {skey}")
        params = self._call(strategy, "suggest()", lambda: strategy.record.suggest(space, strategy.options))
        training = suggest_training(TrialSpace(trial, "", "training"), plan.bench)
        options = backbone_options(TrialSpace(trial, f"{bkey}.", f"backbone {bkey}"), backbone)
        record = TrialRecord.from_trial(trial)
        seed = record.seed if record.seed is not None else derived_seed(plan.bench.seed, trial.number)
        torch.manual_seed(seed)  # the fresh head's init too, whatever ran before in this process
        built = build_backbone(backbone, len(self.splits.classes), options)
        adapted = adapt(strategy.record, built, params, strategy.plugin)
        built = adapted.built
        phases = strategy_phases(strategy, params, len(built.groups))
        check_phases(phases, len(built.groups))
        inputs = inputs_of(built)
        settings = self._settings(training, input_size(inputs, backbone.entry, plan.bench.training), device, seed)
        # known before training, so that pruned trials have it too; a model a strategy changed is its own architecture
        arch = (bkey, _structure(built.model))  # one measurement per architecture: BitFit's is the backbone's
        gflops = self.resources.measure(
            ("forward_gflops", *arch, settings.size),
            lambda: cost.forward_flops(built.model.to(device), inputs.example(1, settings.size).to(device)) / 1e9,
        )
        described = _described(backbone, built, phases, {**params, **training}, settings, gflops, inputs)
        dataclasses.replace(described, backbone_options=options or None).write(trial)
        epochs = sum(ph.epochs for ph in phases)
        self.events.trial_started(running(trial, self.dataset_key, epochs))
        over = self._over_limits(built, settings, arch, gflops)
        if over:  # never trained: zero compute, and the sampler learns it is infeasible
            TrialRecord(infeasible=over, train_seconds=0.0, train_gflops=0.0).write(trial)
            tell_constraints(trial, self.plan.bench.search.constraints.model_dump(exclude_none=True))
            raise optuna.TrialPruned(f"not trained: {over}")
        # what the pruner of a Pareto search compares: the trial's cost, known (latency) or projected (training GFLOPs)
        latency = self._speed(built, settings, arch)["latency_ms"] if plan.bench.search.cost == "latency_ms" else None
        so_far = _SoFar(epochs=epochs, latency_ms=latency, never_pruned=bool(record.recipe or record.probe))
        cost.reset_peak_memory(device)  # so that CUDA peak memory is this trial's own
        start = time.perf_counter()
        try:
            try:
                result = train.fit(
                    built, self.splits, phases, settings, on_epoch=lambda e, acc: self._epoch(trial, e, acc, start, so_far),
                    always=adapted.trainable, on_spent=so_far.spent, on_rates=so_far.rated,
                    extra_loss=None if adapted.extra_loss is None else _ExtraLoss(adapted.extra_loss, strategy),
                    extra_loss_cacheable=adapted.extra_loss_reads_only_trainable,
                )  # fmt: skip
            except BaseException:  # pruned, failed or interrupted: it keeps what it spent
                so_far.write(trial)
                raise
        except basics.TrialFailed as exc:
            TrialRecord(failure=exc.kind, fail_reason=str(exc)).write(trial)
            raise
        except UserError as exc:  # e.g. an image that cannot be decoded: the run stops, going on retries it
            TrialRecord(failure=Failure.INTERRUPTED, fail_reason=f"interrupted: {exc}").write(trial)
            raise
        measured = dataclasses.replace(self._measured(built, settings, arch, result), elapsed_seconds=so_far.elapsed)
        measured.write(trial)
        tell_constraints(trial, self.plan.bench.search.constraints.model_dump(exclude_none=True))
        value = trial_value(result.val_curve, plan.bench.search.select_epochs)
        if plan.bench.search.objective == "pareto":
            return value, getattr(measured, plan.bench.search.cost)
        return value

    def _over_limits(self, built, settings, arch: tuple, gflops: float) -> str | None:
        """Which ``search.constraints`` known before training this configuration breaks
        (latency measured once per architecture and resolution), or None."""

        limits = self.plan.bench.search.constraints.before()
        known = TrialRecord(
            forward_gflops=gflops,
            total_params=cost.count_params(built.model) if "params_m" in limits else None,
            latency_ms=self._speed(built, settings, arch)["latency_ms"] if "latency_ms" in limits else None,
        )
        return infeasible(known, limits)

    def _call(self, strategy, what: str, fn):

        return plugin_call(strategy.plugin, f"strategy '{strategy.record.name}': {what}", fn)

    def _settings(self, training: dict, size: int, device, seed: int):

        t = self.plan.bench.training
        return basics.TrainSettings(
            batch_size=training["batch_size"],
            weight_decay=float(training["weight_decay"]),
            augment=t.augment,
            size=size,
            device=device,
            seed=seed,
            num_workers=t.num_workers,
            compile=t.compile,
            cache=self.resources.cache,
            data_key=self.resources.data_keys[self.dataset_key],
            test_curve=t.test_curve,
        )

    def _epoch(self, trial: optuna.Trial, epoch: int, accuracy: float, start: float, so_far: _SoFar) -> None:

        interrupts.check()
        so_far.curve.append(accuracy)
        self.events.epoch_done(
            running(trial, self.dataset_key, so_far.epochs, so_far.curve), epoch, accuracy, so_far.rates
        )
        search = self.plan.bench.search
        if search.objective == "pareto":  # Optuna cannot report or prune multi-objective trials: the curve is ours
            TrialRecord(val_curve=list(so_far.curve)).write(trial)
        else:
            trial.report(accuracy, epoch)
        so_far.elapsed = time.perf_counter() - start  # training + evaluation so far
        # A recipe from the config runs to the end: it is the baseline the search is measured against;
        # so does a screen probe (one per backbone: the yardstick of its group).
        why = None
        if so_far.never_pruned or epoch >= so_far.epochs:  # after the last epoch there is nothing left to save
            pass
        elif search.objective == "pareto":
            ahead = pruning.dominated_by(trial, epoch, accuracy, so_far.cost(epoch, search.cost), search)
            why = f"pruned after epoch {epoch} at val accuracy {accuracy:.3f}: {ahead}" if ahead else None
        elif trial.should_prune():
            why = f"pruned after epoch {epoch} at val accuracy {accuracy:.3f}"
        if why:
            raise optuna.TrialPruned(why)

    def _speed(self, built, settings, arch: tuple) -> dict:
        """Inference throughput and latency of this architecture (weights do not matter),
        measured once per architecture, input size, batch size and device kind."""

        device = settings.device
        example = lambda n: inputs_of(built).example(n, settings.size)  # noqa: E731

        def speed() -> dict:
            throughput, latency = cost.inference_speed(
                built.model, example, device, settings.batch_size, basics.autocast_dtype(device)
            )
            return {"throughput": throughput, "latency_ms": latency}

        return self.resources.measure(
            ("speed", *arch, settings.size, settings.batch_size, cost.device_name(device)), speed
        )

    def _measured(self, built, settings, arch: tuple, result) -> TrialRecord:

        device = settings.device
        measured = self._speed(built, settings, arch)
        memory, memory_kind = cost.peak_memory_mb(device)
        return TrialRecord(
            **measured,
            val_curve=result.val_curve,
            test_curve=result.test_curve,
            test_accuracy=result.test_accuracy,
            test_correct="".join("1" if c else "0" for c in result.test_correct),
            train_seconds=result.train_seconds,
            train_gflops=result.train_flops / 1e9,
            val_gflops=result.val_flops / 1e9,
            trainable_params=result.trainable_params,
            peak_memory_mb=memory,
            memory_kind=memory_kind,
            device=cost.device_name(device),
            device_index=device.index if device.index is not None else 0,
            precision=result.precision,
            cache=list(result.cache),
        )


class _ExtraLoss:
    """A strategy's ``Adapted.extra_loss``, its failures named: what it returns must be a
    finite-or-not scalar tensor (a NaN is the divergence check's to report)."""

    def __init__(self, fn, strategy):
        self.fn, self.strategy = fn, strategy

    def __call__(self, model, logits, targets):
        import torch

        what = f"strategy '{self.strategy.record.name}': extra_loss()"
        value = plugin_call(self.strategy.plugin, what, lambda: self.fn(model, logits, targets))
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise UserError(
                f"plugin {self.strategy.plugin}: {what} returned {shape}; return a scalar tensor (one value)"
            )
        return value.reshape(()).float()


class _SoFar:
    """A running trial's curve and spend, for the epoch callback. Kept in memory and
    written when the trial stops (:meth:`write`: pruned, failed, interrupted; a finished
    trial's measurements hold them): every stored field is a storage transaction, and a
    10-epoch trial would otherwise write 30 of them (benchmarks/scale.py)."""

    def __init__(self, epochs: int, latency_ms: float | None, never_pruned: bool = False):
        self.epochs, self.latency_ms, self.never_pruned = epochs, latency_ms, never_pruned
        self.curve: list[float] = []
        self.gflops, self.seconds, self.elapsed = 0.0, None, None
        self.rates: dict[str, list[float]] = {}  # the last epoch's, for its event

    def spent(self, seconds: float, flops: float) -> None:
        self.seconds, self.gflops = seconds, flops / 1e9

    def rated(self, rates: dict[str, list[float]]) -> None:
        self.rates = rates

    def write(self, trial: optuna.Trial) -> None:
        """A stopped trial's spend (a pruned trial's epochs count as spent)."""
        if self.seconds is not None:
            TrialRecord(train_seconds=self.seconds, train_gflops=self.gflops, elapsed_seconds=self.elapsed).write(trial)

    def cost(self, epoch: int, kind: str) -> float:
        """The trial's cost as a Pareto search compares it: latency as measured, training
        GFLOPs projected from the epochs so far to all of them."""
        return self.latency_ms if kind == "latency_ms" else self.gflops * self.epochs / epoch


def _described(backbone: PlannedBackbone, built, phases, params: dict, settings, gflops: float, inputs) -> TrialRecord:
    """What the trial is, stored before it trains, so that tables need nothing but the storage."""
    from dataclasses import asdict

    return TrialRecord(
        params=params,
        phases=[asdict(ph) for ph in phases],
        n_groups=len(built.groups),
        pretrained=bool(backbone.entry.pretrained or backbone.weights),
        modality=inputs.modality,
        **{inputs.size_field: settings.size},  # resolution (images) or max_length (text)
        seed=settings.seed,
        forward_gflops=gflops,
        total_params=cost.count_params(built.model),
    )


def _structure(model) -> str:
    """What a strategy's ``adapt`` left of a model's architecture: its modules' types and
    its parameters' names and shapes. BitFit (only ``requires_grad`` changed) is the
    backbone's architecture, measured once with it (one Img/s per architecture in a
    table); LoRA (new modules) is its own."""
    import hashlib

    h = hashlib.sha256()
    for name, module in model.named_modules():
        h.update(f"{name}:{type(module).__qualname__};".encode())
    for name, param in model.named_parameters():
        h.update(f"{name}{tuple(param.shape)};".encode())
    return h.hexdigest()[:16]
