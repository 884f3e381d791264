"""Frozen-prefix feature cache: compute what a frozen prefix outputs once, train the rest on it.

When the first groups of a backbone are frozen (all of them for a linear probe)
and the input pipeline is deterministic, the frozen part of the network gives
the same activations every epoch and every trial. This module finds where the
network can be cut (:func:`find_cut`), extracts the prefix's output once per
(weights, data, transform, cut, precision), keeps it in memory (bounded, least
recently used evicted) and optionally on disk, and runs the trainable suffix on
it by turning the prefix modules into pass-throughs (:func:`stubbed`).

The frozen prefix runs in eval mode whether or not the cache is used (dropout,
stochastic depth and batch-norm statistics of frozen layers are inference-mode,
as Keras' feature-extraction guide does it), so cached and uncached training
are the same computation.

A cut is found from one traced forward pass: a module (or the model's
``forward_features``) that is called once, after which nothing uses a frozen
module again, such that running the model with every module of the prefix
replaced by a pass-through, on the prefix's output, gives the same logits as
the intact model. Models whose prefix contains computation outside modules
(a ViT's position embedding) cut only at ``forward_features``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tlbench.engine.cachedir import CACHE_SUBFOLDER, DiskFolder
from tlbench.store.record import INPUT, CacheUse  # noqa: F401 - INPUT: the cut before any module

FEATURES = "forward_features"  # the pseudo-module timm models call before forward_head
_MAX_VERIFICATIONS = 6  # candidate cuts checked numerically before giving up


@dataclass(frozen=True)
class Cut:
    """Where the network is split: the frozen prefix ends at ``name``."""

    name: str  # module name, INPUT or FEATURES
    prefix: frozenset[str]  # modules entirely inside the prefix (they run in eval mode)
    opened: frozenset[str]  # modules started before the cut and finished after it (their own parameters are frozen)
    stubs: tuple[str, ...]  # outermost prefix modules: pass-throughs when training on cached features
    feature_shape: tuple[int, ...]  # output of the prefix for one example


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the prefix has run."""


# --------------------------------------------------------------------------- finding a cut


STOCHASTIC = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def find_cut(model: nn.Module, trainable: set[str], x: torch.Tensor) -> tuple[Cut, str]:
    """The deepest valid cut whose prefix holds only frozen parameters, and a note when
    frozen layers exist but no cut after them works (the cut is then at the input).

    ``trainable``: parameter names that train in this phase; ``x``: a batch of two
    made-up inputs on the model's device (Inputs.example). Leaves the model as it
    was (eval-mode forward passes without gradients).
    """
    was_training = model.training
    model.eval()
    try:
        x = x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
        with torch.no_grad():
            events, shapes, reference = _trace(model, x)
            return _search(model, trainable, x, reference, events, shapes)
    finally:
        model.train(was_training)


def _trace(model: nn.Module, x: torch.Tensor) -> tuple[list[tuple[str, str]], dict[str, tuple[int, ...]], torch.Tensor]:
    """('start'|'end', module name) in call order, each module's output shape, and the model's output."""
    events: list[tuple[str, str]] = []
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue
        handles.append(module.register_forward_pre_hook(lambda m, a, n=name: events.append(("start", n))))
        handles.append(module.register_forward_hook(lambda m, a, out, n=name: _record_end(events, shapes, n, out)))
    restore = _wrap_features(model, events, shapes)
    try:
        out = model(x)
    finally:
        for h in handles:
            h.remove()
        restore()
    return events, shapes, out


def _record_end(events, shapes, name: str, out) -> None:
    events.append(("end", name))
    shapes[name] = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else ()


def _wrap_features(model: nn.Module, events, shapes) -> Callable[[], None]:
    original = getattr(model, FEATURES, None)
    if not callable(original) or FEATURES in vars(model):
        return lambda: None

    def traced(*args, **kwargs):
        events.append(("start", FEATURES))
        out = original(*args, **kwargs)
        _record_end(events, shapes, FEATURES, out)
        return out

    object.__setattr__(model, FEATURES, traced)
    return lambda: object.__delattr__(model, FEATURES)


def _search(model, trainable, x, reference, events, shapes) -> tuple[Cut, str]:
    modules = dict(model.named_modules())
    first, last, calls = {}, {}, {}
    for i, (kind, name) in enumerate(events):
        first.setdefault(name, i)
        last[name] = i
        calls[name] = calls.get(name, 0) + (kind == "start")
    root_direct = {n for n, _ in model.named_parameters(recurse=False)}
    sequential_children = {
        f"{parent}.{child}" if parent else child
        for parent, module in modules.items()
        if isinstance(module, (nn.Sequential, nn.ModuleList)) or not parent
        for child in dict(module.named_children())
    }
    candidates = [
        n for n in sorted(last, key=last.get, reverse=True)
        if calls[n] == 1 and isinstance(shapes.get(n), tuple) and shapes[n] and (n == FEATURES or n in sequential_children)
    ]  # fmt: skip
    frozen = _all_params(model) - trainable
    at_input = Cut(name=INPUT, prefix=frozenset(), opened=frozenset(), stubs=(), feature_shape=tuple(x.shape[1:]))
    if not frozen:
        return at_input, ""

    # dropout after the last frozen layer (torchvision's classifier = Sequential(Dropout, Linear)) belongs to
    # the trained part: in the prefix it would run in eval mode, and never drop, in a head-only phase
    def holds(m: str, names: set[str]) -> bool:
        return any(f"{m}.{p}".lstrip(".") in names for p, _ in modules[m].named_parameters(recurse=False))

    last_frozen = max((last[m] for m in first if m in modules and holds(m, frozen)), default=-1)
    head_parents = {m.rpartition(".")[0] for m in modules if m and holds(m, trainable)}
    trailing = {
        m for m in first
        if m in modules and isinstance(modules[m], STOCHASTIC) and first[m] > last_frozen and m.rpartition(".")[0] in head_parents
    }  # fmt: skip
    tried = 0
    for name in candidates:
        end = last[name]
        closed = frozenset(m for m in first if m != FEATURES and last[m] <= end)
        if closed & trailing:
            continue
        opened = frozenset(m for m in first if m != FEATURES and first[m] <= end < last[m])
        used = _params(modules, closed, recurse=True) | _params(modules, opened, recurse=False) | root_direct
        if used & trainable:
            continue  # a trainable parameter is (or may be) used before the cut
        stubs = (FEATURES,) if name == FEATURES else tuple(sorted(_outermost(closed)))
        cut = Cut(name=name, prefix=closed, opened=opened, stubs=stubs, feature_shape=shapes[name])
        tried += 1
        if _verify(model, cut, x, reference):
            return cut, ""
        if tried >= _MAX_VERIFICATIONS:
            break
    if tried:
        return (
            at_input,
            f"no module boundary after the frozen layers splits {type(model).__name__}; inputs cached instead",
        )
    return at_input, ""


def _params(modules: Mapping[str, nn.Module], names: set[str], recurse: bool) -> set[str]:
    out = set()
    for name in names:
        for pname, _ in modules[name].named_parameters(recurse=recurse):
            out.add(f"{name}.{pname}")
    return out


def _all_params(model: nn.Module) -> set[str]:
    return {n for n, _ in model.named_parameters()}


def _outermost(names: set[str]) -> set[str]:
    """Modules whose parent is not in ``names`` (a closed module's children are all closed too)."""
    return {n for n in names if n.rpartition(".")[0] not in names}


def _verify(model: nn.Module, cut: Cut, x: torch.Tensor, reference: torch.Tensor) -> bool:
    """Does the stubbed model on the prefix's output give the intact model's logits?"""
    try:
        features = extract_batch(model, cut, x)
        with stubbed(model, cut):
            out = model(features)
    except Exception:  # a wrong cut feeds a tensor of the wrong shape somewhere
        return False
    return out.shape == reference.shape and torch.allclose(out.float(), reference.float(), rtol=1e-3, atol=1e-4)


# --------------------------------------------------------------------------- running prefix and suffix


def extract_batch(model: nn.Module, cut: Cut, x: torch.Tensor) -> torch.Tensor:
    """The prefix's output for a batch: the model runs up to the cut, then stops."""
    if cut.name == INPUT:
        return x
    if cut.name == FEATURES:
        return model.forward_features(x)
    captured: list[torch.Tensor] = []

    def stop(module, args, out):
        captured.append(out)
        raise _Stop

    handle = model.get_submodule(cut.name).register_forward_hook(stop)
    try:
        model(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    return captured[0]


def _passthrough(x, *args, **kwargs):
    return x


@contextlib.contextmanager
def stubbed(model: nn.Module, cut: Cut) -> Iterator[nn.Module]:
    """The model with its prefix modules turned into pass-throughs: it takes cached features."""
    patched = []
    try:
        for name in cut.stubs:
            module = model if name == FEATURES else model.get_submodule(name)
            attr = FEATURES if name == FEATURES else "forward"
            object.__setattr__(module, attr, _passthrough)
            patched.append((module, attr))
        yield model
    finally:
        for module, attr in patched:
            object.__delattr__(module, attr)


def set_prefix_eval(model: nn.Module, cut: Cut | None) -> None:
    """Put every module of the frozen prefix in eval mode (call after ``model.train()``)."""
    if cut is None:
        return
    for name in cut.prefix:
        model.get_submodule(name).eval()


# --------------------------------------------------------------------------- the cache


@dataclass
class Features:
    """Cached prefix outputs of one dataset's splits, in split order."""

    splits: dict[str, torch.Tensor]  # "train" / "val" / "test" -> [N, *feature_shape]
    seconds: float  # wall clock the extraction took (train split)
    channels_last: bool  # 4-D maps the prefix produced in channels_last layout (images, conv features)
    flops_per_image: float = 0.0  # forward FLOPs of the prefix for one example (0 for cached inputs)
    test_seconds: float = 0.0  # wall clock of the test split's pass: measuring, not choosing (not kept on disk)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.splits.values())


class FeatureCache:
    """In-memory LRU of extracted features (``memory_mb``), optionally backed by a folder.

    On disk the cache lives in a subfolder of its own, ``<directory>/tlbench-features/``,
    marked with a ``CACHEDIR.TAG`` and holding an ``index.json`` of the files it wrote
    (``<32 hex digits>.pt``). It reads, trims (to ``disk_mb``, oldest first) and
    overwrites only files its index names, so ``directory`` may be any folder, one
    holding your weights included: nothing else in it is touched. A subfolder of that
    name that tlbench did not make is refused. Deleting the subfolder is safe.
    Thread- and process-safe: parallel trials and workers share one cache.
    """

    def __init__(self, memory_mb: float = 2048, directory: Path | None = None, disk_mb: float = 10240):
        self.memory_bytes = int(memory_mb * 2**20)
        self.folder = None if directory is None else DiskFolder(directory / CACHE_SUBFOLDER)
        self.disk_bytes = int(disk_mb * 2**20)
        self._entries: OrderedDict[str, Features] = OrderedDict()
        self._cuts: dict[tuple, tuple[Cut, str]] = {}
        self._lock = threading.Lock()
        self.hits = self.misses = self.disk_hits = 0

    def find_cut(self, model: nn.Module, trainable: set[str], x: torch.Tensor) -> tuple[Cut, str]:
        """:func:`find_cut`, remembered per architecture, trainable set, input shape and device:
        later trials of a search skip the traced passes."""
        key = (type(model).__qualname__, repr(model), frozenset(trainable), tuple(x.shape), str(x.dtype), str(x.device))
        with self._lock:
            if key in self._cuts:
                return self._cuts[key]
        found = find_cut(model, trainable, x)
        with self._lock:
            return self._cuts.setdefault(key, found)

    def fits(self, nbytes: int) -> bool:
        return nbytes <= self.memory_bytes

    def get(self, key: str) -> tuple[Features | None, str]:
        """(features, 'memory' | 'disk') or (None, '')."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return self._entries[key], "memory"
        loaded = self._load(key)
        if loaded is not None:
            self._put(key, loaded)
            with self._lock:
                self.disk_hits += 1
            return loaded, "disk"
        with self._lock:
            self.misses += 1
        return None, ""

    def put(self, key: str, features: Features) -> None:
        self._put(key, features)
        self._save(key, features)

    def _put(self, key: str, features: Features) -> None:
        with self._lock:
            self._entries[key] = features
            self._entries.move_to_end(key)
            while sum(f.nbytes for f in self._entries.values()) > self.memory_bytes and len(self._entries) > 1:
                self._entries.popitem(last=False)

    def _load(self, key: str) -> Features | None:
        data = None if self.folder is None else self.folder.read(key)
        if data is None:
            return None
        try:
            loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            return Features(
                dict(loaded["splits"]), float(loaded["seconds"]), bool(loaded["channels_last"]), float(loaded["flops"])
            )
        except Exception:  # truncated or damaged: recomputed, and the file (ours) overwritten
            return None

    def _save(self, key: str, features: Features) -> None:
        if self.folder is None or features.nbytes > self.disk_bytes:
            return
        buffer = io.BytesIO()
        data = {"splits": features.splits, "seconds": features.seconds, "channels_last": features.channels_last,
                "flops": features.flops_per_image}  # fmt: skip
        torch.save(data, buffer)
        try:
            self.folder.write(key, buffer.getvalue(), self.disk_bytes)
        except OSError as exc:  # disk full, folder removed or made read-only mid-run: speed only, results unchanged
            import sys

            print(
                f"tlbench: warning: feature cache {self.folder.path}: cannot write ({exc.strerror or exc}); "
                "going on with the in-memory cache only",
                file=sys.stderr,
            )
            self.folder = None


# --------------------------------------------------------------------------- keys


def cache_key(model: nn.Module, cut: Cut, data: str, transform: str, precision: str, device: torch.device) -> str:
    """A content hash of everything the prefix's output depends on.

    ``data`` identifies the examples (see :func:`data_fingerprint`), ``transform``
    is the eval transform's repr (resize, crop, normalization). The weights
    enter as the bytes of every parameter and buffer the prefix can use; the
    architecture as the prefix modules' reprs.
    """
    h = hashlib.sha256()
    for part in (cut.name, data, transform, precision, device.type, torch.__version__):
        h.update(part.encode() + b"\0")
    if cut.name == INPUT:
        return h.hexdigest()[:32]
    h.update(type(model).__qualname__.encode())
    state: dict[str, torch.Tensor] = {}
    for name in sorted(_outermost(set(cut.prefix))):  # sorted: a set's order follows the hash seed
        module = model.get_submodule(name)
        h.update(f"{name}={module!r}".encode())
        state.update({f"{name}.{k}": v for k, v in module.state_dict().items()})
    for name in sorted(cut.opened | {""}):
        module = model.get_submodule(name)
        own = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
        state.update({f"{name}.{k}": v for k, v in own})
    for key in sorted(state):
        tensor = state[key]
        h.update(f"{key}{tuple(tensor.shape)}{tensor.dtype}".encode())
        h.update(_tensor_bytes(tensor))
    return h.hexdigest()[:32]


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    t = tensor.detach().to("cpu").contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def data_fingerprint(dataset_key: str, splits: Mapping[str, Sequence[str]], labels: Mapping[str, Sequence[int]]) -> str:
    """Identity of the examples: their ids and labels, and size and mtime of ids that are files."""
    h = hashlib.sha256(dataset_key.encode())
    for name in sorted(splits):
        h.update(name.encode())
        for example, label in zip(splits[name], labels[name]):
            h.update(f"{example}\0{label}\0".encode())
            if os.sep in example or "/" in example:
                try:
                    st = os.stat(example)
                    h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
                except OSError:
                    pass
    return h.hexdigest()[:32]


def timer() -> Callable[[], float]:
    start = time.perf_counter()
    return lambda: time.perf_counter() - start
