"""The benchmarks.yaml schema, and turning its mistakes into one-line messages.

Names (datasets, backbones, strategies) are checked against the loaded plugins
later, in :mod:`tlbench.search.planning`; this module checks shape and types only.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tlbench.base import space
from tlbench.types import UserError

# A searched value (tlbench.base.space.parse): fixed (3, 0.01, "x"), a range {low, high, log, step} (short: [0.1, 1.0]),
# or {choices: [...]} (short: a list of other than two values).
Spec = int | float | str | bool | list | dict

MAX_SEED = 2**32 - 1  # numpy's seeds end here; seeds derived from it wrap around (studies.derived_seed)
_SLUG = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Open(BaseModel):
    """Known fields plus the plugin's own options (kept in ``model_extra``)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class BackboneEntry(_Open):
    name: str  # a backbone record name, or family:model such as timm:resnet18
    pretrained: bool = True  # load pretrained weights; false: random init (a from-scratch baseline)
    weights: str | None = None  # local weights file (.safetensors or torch state dict), relative to the config, or package:<module>/<file>
    label: str | None = None  # key in results; default: name, plus "-scratch" for random init
    resolution: PositiveInt | None = None  # image backbones: input side in pixels; default: training.resolution or the backbone's
    max_length: PositiveInt | None = None  # text backbones: tokens per text (padded or cut); default: training.max_length or the backbone's

    @property
    def key(self) -> str:
        if self.label:
            return self.label
        return self.name if self.pretrained or self.weights else f"{self.name}-scratch"


class DatasetEntry(_Open):
    name: str  # a dataset record name, e.g. imagefolder, synthetic
    label: str | None = None  # key in results; default: name
    train_samples: PositiveInt | None = None  # subsample training examples, balanced across classes
    val_samples: PositiveInt | None = None  # subsample validation examples
    test_samples: PositiveInt | None = None  # subsample test examples
    per_class: PositiveInt | None = None  # at most this many training examples per class

    @property
    def key(self) -> str:
        return self.label or self.name


class StrategyEntry(_Open):
    name: str  # a strategy record name, e.g. finetune
    label: str | None = None  # key in results; default: name

    @property
    def key(self) -> str:
        return self.label or self.name


class TrackerEntry(_Open):
    name: str  # a tracker record name, e.g. tensorboard, mlflow (tlbench-tracking)
    optional: bool = False  # true: a tracker that cannot check, open or write is a warning, not a stop


class Recipe(_Strict):
    backbone: str  # a backbone key (label or name) from this config
    strategy: str  # a strategy key from this config
    params: dict[str, Any] = Field(default_factory=dict)  # strategy and training params to fix, e.g. lr_head


class ScreenConfig(_Strict):
    """Score every backbone on its frozen features before the search (tlbench/search/screen.py)."""

    enabled: bool = True  # false: no screen
    drop: bool = True  # the sampler skips backbones the rule drops (recipes on them still run)
    score: Literal["knn", "ridge", "logme"] = "knn"  # the score the rule compares (knn, ridge: validation accuracy)
    margin: float = Field(0.10, gt=0.0, le=1.0)  # dropped when this far below the best backbone's score


class ConstraintsConfig(_Strict):
    """Upper bounds on cost. Known before training (forward_gflops, params_m, latency_ms):
    a configuration over them is never trained. Known after (train_seconds,
    peak_memory_mb): the sampler is told, and learns to avoid them."""

    forward_gflops: PositiveFloat | None = None  # one example's forward pass (an image, a text), GFLOPs
    params_m: PositiveFloat | None = None  # the adapted model's parameters, millions
    latency_ms: PositiveFloat | None = None  # inference latency per batch, ms (measured once per architecture)
    train_seconds: PositiveFloat | None = None  # training time of a trial
    peak_memory_mb: PositiveFloat | None = None  # peak memory of a trial

    def before(self) -> dict[str, float]:
        return {k: v for k, v in self.model_dump().items() if v is not None and k in BEFORE_TRAINING}


BEFORE_TRAINING = ("forward_gflops", "params_m", "latency_ms")


class BudgetConfig(_Strict):
    """Compute to spend per dataset study, besides n_trials and timeout: no trial starts
    once the study's trials have used this much training (each trial counts fully)."""

    gflops: PositiveFloat | None = None  # training GFLOPs, summed over the study's trials
    seconds: PositiveFloat | None = None  # training seconds, summed over the study's trials


class SearchConfig(_Strict):
    n_trials: PositiveInt | None = 10  # finished trials per dataset study (resuming counts earlier ones); fewer once a space of lists has run whole
    timeout: PositiveFloat | None = None  # seconds per dataset study, per invocation
    sampler: Literal["tpe", "random", "local", "groups"] = "local"  # seeded with the benchmark's seed (local: docs/performance.md, design step 4; groups lost held-out look 4)
    local_share: float = Field(0.5, ge=0, le=1)  # sampler local: share of sampled trials that change one setting of the best trial so far
    local_step: Literal["random", "model", "model_any"] = "random"  # sampler local: which neighbour a local trial tries (model: the likeliest to improve under a Gaussian process over this study's trials; model_any: any configuration not run, a space of lists)
    untried_draws: bool = False  # sampler local / groups: random trials drawn among the configurations not run yet (a space of lists of choices)
    group_share: float = Field(1.0, ge=0, le=1)  # sampler groups: share of sampled trials in the (backbone, strategy) group whose best trial is best so far
    group_step: bool = True  # sampler groups: inside the chosen group, first move one setting of its best trial one step (as local does)
    pruner: Literal["median", "asha", "hyperband", "envelope", "none"] = "none"  # prunes on validation accuracy after each epoch (none: chosen on the development grids; envelope: only what this task's finished curves say cannot catch up)
    prune_within: Literal["strategy", "strategy_backbone", "study"] = "strategy"  # whom a trial is compared with
    prune_startup: PositiveInt = 2  # completed trials of a group before the median (or envelope) rule judges that group
    startup_trials: PositiveInt = 4  # random trials before TPE models
    warmup_epochs: int = Field(0, ge=0)  # the pruner never stops a trial during its first epochs
    select_epochs: int = Field(5, ge=1, strict=True)  # a trial's value (the sampler follows it, the best trial has the highest): its last epochs' mean validation accuracy (held-out look 6; 1: the last epoch's, as before 0.9; design step 10 kept 5: a tie over 22 grids)
    storage: str | None = None  # Optuna storage URL; default: SQLite file in the run folder
    heartbeat: PositiveInt = 60  # seconds; with a shared storage, a trial silent for twice this is failed and retried
    enqueue: list[Recipe] = Field(default_factory=list)  # known-good recipes to try first
    retries: int = Field(1, ge=0, le=100)  # times an interrupted (killed, Ctrl-C, lost) trial runs again
    objective: Literal["accuracy", "pareto"] = "accuracy"  # pareto: validation accuracy against search.cost
    cost: Literal["train_gflops", "latency_ms"] = "train_gflops"  # the cost a Pareto search minimises
    screen: ScreenConfig = ScreenConfig()  # true/false, or its settings
    portfolio: int = Field(2, ge=0, le=8, strict=True)  # configurations best on earlier benchmarks, tried first (tlbench/search/portfolio.py)
    portfolio_from: list[str] = Field(default_factory=list)  # your exported tables or run folders it also learns from
    constraints: ConstraintsConfig = ConstraintsConfig()  # upper bounds on a configuration's cost
    budget: BudgetConfig = BudgetConfig()  # compute a study may spend

    @field_validator("screen", mode="before")
    @classmethod
    def _screen_switch(cls, value: Any) -> Any:
        return {"enabled": value} if isinstance(value, bool) else value

    @model_validator(mode="after")
    def _stops(self) -> SearchConfig:
        if self.n_trials is None and self.timeout is None:
            raise ValueError("n_trials is empty and there is no timeout, so the search would never stop; set either")
        if self.pruner == "hyperband" and self.prune_within != "study":
            raise ValueError(
                "pruner hyperband compares every trial (its brackets are whole-study); use pruner: asha for "
                "successive halving within each strategy, or set prune_within: study"
            )
        return self


class CacheConfig(_Strict):
    """The frozen-prefix feature cache (speed only: results are the same without it)."""

    enabled: bool = True  # train on cached outputs of the frozen layers when there is no augmentation
    memory_mb: PositiveFloat = 2048  # bound on cached features held in memory (least recently used go first)
    dir: str | None = None  # also keep them in this folder (relative to the config file); safe to delete
    disk_mb: PositiveFloat = 10240  # bound on that folder; oldest files go first


class TrainingConfig(_Strict):
    batch_size: Spec = 32  # fixed, or searched (e.g. {choices: [16, 32, 64]})
    weight_decay: Spec = 0.0  # fixed, or searched (e.g. [1.0e-6, 1.0e-2], log scale)
    augment: bool = False  # random resized crop + flip on training images (text backbones do not augment)
    resolution: PositiveInt | None = None  # input side for every image backbone; default: each backbone's own
    max_length: PositiveInt | None = None  # tokens per text for every text backbone; default: each backbone's own
    device: str | list[str] = "auto"  # auto (every GPU, else CPU), cpu, cuda, cuda:1, or a list: one trial per device
    num_workers: int = Field(0, ge=0)  # DataLoader worker processes
    compile: bool = False  # torch.compile each phase's model (worth it on GPU for long trials)
    cache: CacheConfig = CacheConfig()  # the frozen-prefix feature cache
    test_curve: bool = False  # also test after every epoch (for recorded grids; never selects; one test pass an epoch)

    @field_validator("batch_size", "weight_decay")
    @classmethod
    def _searched(cls, value: Spec, info: ValidationInfo) -> Spec:

        try:
            space.parse(value, strict=True)
        except UserError as exc:
            raise ValueError(str(exc)) from exc
        if info.field_name == "batch_size":
            sizes = space.values_of(value)
            bad = next((v for v in sizes if not isinstance(v, int) or isinstance(v, bool) or v < 2), None)
            if bad is not None:
                raise ValueError(
                    f"batch size {bad!r}: give whole numbers of 2 or more (batch norm cannot train on one example per step)"
                )
        return value  # as written: the fingerprint hashes what the user wrote

    @field_validator("device")
    @classmethod
    def _devices(cls, value: str | list[str]) -> str | list[str]:
        names = [value] if isinstance(value, str) else value
        if not names:
            raise ValueError("give at least one device")
        for name in names:
            if not _DEVICE.match(name) or (name == "auto" and len(names) > 1):
                raise ValueError(f"{name!r} is not a device; use auto, cpu, mps, cuda, cuda:N or a list like [cuda:0, cuda:1]")
        return value


# search fields added after runs were made (tlbench 0.2.0): left out of the fingerprint at their defaults
ADDED_SEARCH_FIELDS = {
    "prune_within": "strategy",
    "prune_startup": 2,
    "constraints": ConstraintsConfig().model_dump(mode="json"),
    "objective": "accuracy",
    "cost": "train_gflops",
    "portfolio": 2,
    "portfolio_from": [],
    "select_epochs": 1,
}


class Benchmark(_Strict):
    name: str = Field(pattern=_SLUG)  # results go to results_dir/name/run
    run: str | None = Field(None, pattern=_SLUG)  # run name; default: a fingerprint of the config
    seed: int = Field(0, ge=0, le=MAX_SEED)  # seeds splits, sampler and training
    repeats: int = Field(0, ge=0)  # retrain each best configuration with this many new seeds, on the test split
    results_dir: str = "results"  # relative to the config file
    plugins: list[str] = Field(default_factory=list)  # .py files or folders, relative to the config file
    datasets: list[DatasetEntry] = Field(min_length=1)  # one Optuna study each (see below)
    backbones: list[BackboneEntry] = Field(min_length=1)  # the pretrained networks the search chooses among
    strategies: list[StrategyEntry] = Field(min_length=1)  # the ways of fine-tuning the search chooses among
    search: SearchConfig = SearchConfig()  # how the search spends its trials
    training: TrainingConfig = TrainingConfig()  # how every trial trains
    trackers: list[TrackerEntry] = Field(default_factory=list)  # where each trial is also recorded (TensorBoard, MLflow, ...)

    def fingerprint(self) -> str:
        """Hash of what defines the search: not the budget, repeats, storage or run name."""
        exclude = {
            "run": True,
            "repeats": True,
            "trackers": True,  # where results are copied to, not what they are
            # budgets and how the search spends them: a run goes on under new ones
            "search": {"n_trials", "timeout", "storage", "heartbeat", "retries", "screen", "budget"},
            "training": {"cache", "compile"},  # speed settings: same results either way
        }
        data = self.model_dump(mode="json", exclude=exclude)
        for field, default in ADDED_SEARCH_FIELDS.items():  # so that runs made before they existed go on
            if data["search"].get(field) == default:
                del data["search"][field]
        for section in [data["training"], *data["backbones"]]:  # text's max_length (0.4): likewise when unset
            if section.get("max_length", 0) is None:
                del section["max_length"]
        if not data["training"]["test_curve"]:  # 0.4.1: likewise when off
            del data["training"]["test_curve"]
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]

    def refuse_older_values(self, stored: str, what: str, new: str) -> None:
        """Refuse, with the setting that goes on with it, a study or run folder (``what``) whose
        fingerprint ``stored`` is this config's under tlbench 0.8 or earlier, which valued each
        trial on its last epoch's validation accuracy (``search.select_epochs: 1``, left out of
        the fingerprint) where 0.9 takes its last 5 epochs' mean: one study would mix both."""
        if self.search.select_epochs == 1:
            return
        older = self.model_copy(update={"search": self.search.model_copy(update={"select_epochs": 1})})
        if older.fingerprint() == stored:
            raise UserError(
                f"{what} was made by tlbench 0.8 or earlier from this config, when a trial's value was its last "
                "epoch's validation accuracy (0.9: the mean of its last search.select_epochs epochs); add "
                f"search.select_epochs: 1 to the config to go on with it, or set another 'run:' name to start a new {new}"
            )

    @property
    def run_name(self) -> str:
        return self.run or f"cfg-{self.fingerprint()}"


MAX_CONFIG_BYTES = 1_000_000  # a benchmarks.yaml is a few KB; more is a wrong file
MAX_NODES = 100_000  # values in the loaded config, counting each use of a YAML alias
MAX_DEPTH = 20  # nesting of mappings and lists


def load_config(path: Path) -> tuple[Benchmark, Path]:
    """The benchmark in ``path`` and the folder relative paths resolve against."""
    return parse_config(read_yaml(path), str(path)), path.resolve().parent


def read_yaml(path: Path) -> Any:
    """The YAML document in ``path``: UTF-8 (or UTF-16 with a byte-order mark), at most
    ``MAX_CONFIG_BYTES``, parsed safely, and bounded in size and depth after its aliases
    are expanded (a 1 KB "billion laughs" file expands to gigabytes)."""
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a config file; pass the path of a benchmarks.yaml")
    if not path.is_file():
        raise UserError(f"{path}: no such config file; pass the path of a benchmarks.yaml")
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise UserError(f"{path}: cannot read the config ({exc.strerror}); check its permissions") from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise UserError(f"{path}: larger than {MAX_CONFIG_BYTES // 1000} KB; a benchmark config is a small YAML file")
    text = _decode(raw, path)
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}:{where}: invalid YAML: {problem}") from exc
    except RecursionError as exc:
        raise UserError(f"{path}: nested too deeply (more than {MAX_DEPTH} levels); a config is a few levels deep") from exc
    return data  # parse_config bounds it (aliases expanded, depth, NaN) before anything walks it


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load``, except that a key given twice in one mapping is an error:
    PyYAML keeps the last one silently, so ``lr_head`` written twice ran with a value
    the user may not have meant."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key!r} appears twice in one mapping; keep one (YAML would silently use the last)", mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _decode(raw: bytes, path: Path) -> str:
    """The config's text: UTF-8 (with or without a BOM), or UTF-16/32 by their BOM; any
    bytes that are not that text are one line (random bytes beginning FF FE, a UTF-16
    file cut to an odd length, a binary file)."""
    encoding = "utf-8-sig"
    if raw.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        encoding = "utf-32"
    elif raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding = "utf-16"
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        what = "UTF-8" if encoding == "utf-8-sig" else f"{encoding.upper()} (its first bytes say so)"
        byte = f"byte {exc.start} is 0x{raw[exc.start]:02x}" if exc.start < len(raw) else "it ends mid-character"
        raise UserError(f"{path}: not a text file in {what} ({byte}); save the config as UTF-8 YAML") from exc
    if "\x00" in text:
        raise UserError(f"{path}: contains NUL bytes, so it is no YAML text file; pass the path of a benchmarks.yaml")
    return text


def key_text(key: Any) -> str:
    """A mapping key as an error message names it: as written when it is printable text, else
    quoted with escapes (a key holding a newline must not break the one-line message)."""
    text = str(key)
    return text if text and text.isprintable() and text.strip() == text else repr(text)


def check_bounded(data: Any, source: str) -> None:
    """Refuse a loaded document with more than MAX_NODES values (aliases counted at
    each use), nesting deeper than MAX_DEPTH, or a NaN/infinite number anywhere."""
    count = 0
    stack: list[tuple[Any, int, str]] = [(data, 0, "")]
    while stack:
        value, depth, where = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise UserError(f"{source}: more than {MAX_NODES} values once YAML aliases are expanded; write the config out plainly")
        if depth > MAX_DEPTH:
            raise UserError(f"{source}: {where.lstrip('.')}: nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{source}: {where.lstrip('.')}: {value} is not a finite number; give a real value")
        if isinstance(value, dict):
            stack += [(v, depth + 1, f"{where}.{key_text(k)}") for k, v in value.items()]
        elif isinstance(value, list):
            stack += [(v, depth + 1, f"{where}[{i}]") for i, v in enumerate(value)]


def parse_config(data: Any, source: str = "config") -> Benchmark:
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a mapping with name, datasets, backbones and strategies")
    check_bounded(data, source)
    try:
        return Benchmark.model_validate(data)
    except ValidationError as exc:
        raise UserError(f"{source}: {format_error(exc)}") from exc


def format_error(exc: ValidationError) -> str:
    """The first problem as 'field.path: message (got value)', plus a count of the rest."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{key_text(p)}" for p in first["loc"]).lstrip(".")
    if first["type"] == "extra_forbidden":
        message = "unknown field; check its spelling and where it is indented"
    elif first["type"] == "missing":
        message = "required field is missing"
    elif first["type"] == "value_error":  # our own validators: the message says what was wrong
        message = first["msg"].removeprefix("Value error, ")
    else:
        message = f"{first['msg']} (got {first['input']!r})"
    more = f" (and {len(errors) - 1} more problem{'s' * (len(errors) > 2)})" if len(errors) > 1 else ""
    return f"{where or 'top level'}: {message}{more}"
