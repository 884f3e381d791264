"""Searched values, and the space a strategy draws them from.

A searched value is one of three things (:func:`parse`), written in a config or a
plugin's defaults as:

- **fixed**: a single value (``3``, ``0.01``, ``"all"``);
- **range**: ``{low: 1.0e-4, high: 1.0e-1}`` with optional ``log: true`` and ``step``,
  short form ``[low, high]``; whole-number ends give a whole-number range; on a log
  scale when the range says ``log: true`` or the strategy asks for it
  (``space.suggest("lr", spec, log=True)``);
- **choices**: ``{choices: [16, 32, 64]}``, short form a list of other than two
  values (``[16, 32, 64]``, ``[adamw, sgd]``).

The one ambiguous short form is two whole numbers, ``batch_size: [16, 32]``: the
range 16..32 or one of the two? In a config it is refused with the two ways to say
it; in a plugin's defaults it stays a range, as API 1.0 defined it. Numbers YAML
reads as text (``"1e-3"``) count as numbers; a decimal comma (``0,01``) is refused.

:class:`TrialSpace` is what ``Strategy.suggest`` receives (the
:class:`tlbench.types.Space` protocol): it draws each value from an Optuna trial,
the names prefixed with the strategy's key; or, for checks before any compute,
at a corner of the space (:func:`corners`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from tlbench.types import UserError


@dataclass(frozen=True)
class Fixed:
    value: Any  # used as it is, never sampled


@dataclass(frozen=True)
class Range:
    low: int | float  # inclusive
    high: int | float  # inclusive
    log: bool | None = None  # log scale; None: as the strategy asks (suggest(..., log=...))
    step: int | float | None = None  # grid step; whole-number ranges default to 1

    @property
    def integer(self) -> bool:
        return _is_int(self.low) and _is_int(self.high)

    def __str__(self) -> str:
        return (
            f"{self.low}..{self.high}"
            + " on a log scale" * bool(self.log)
            + (f" step {self.step}" if self.step else "")
        )


@dataclass(frozen=True)
class Choices:
    values: tuple[Any, ...]  # one of these, sampled as a categorical


Searched = Fixed | Range | Choices
_RANGE_KEYS = {"low", "high", "log", "step"}
_DECIMAL_COMMA = re.compile(r"^\s*[+-]?\d*,\d+([eE][+-]?\d+)?\s*$")


def parse(spec: Any, *, strict: bool = False) -> Searched:
    """The searched value a spec stands for; raises UserError (without a field name:
    callers prefix it) for one that is malformed. ``strict``: a config's value, where
    the ambiguous short form ``[16, 32]`` is refused."""
    spec = number(spec)
    if isinstance(spec, dict) and "choices" in spec:
        if set(spec) != {"choices"} or not isinstance(spec["choices"], list) or not spec["choices"]:
            raise UserError(
                f"{spec!r}: write choices as {{choices: [a, b, ...]}} with at least one value and no other key"
            )
        return Choices(tuple(number(v) for v in spec["choices"]))
    if isinstance(spec, dict) and {"low", "high"} <= set(spec):
        extra = set(spec) - _RANGE_KEYS
        if extra:
            raise UserError(
                f"{spec!r}: unknown key {sorted(extra)[0]!r} in a range; a range has low, high, log and step"
            )
        values = {k: number(v) for k, v in spec.items()}
        if not (_is_number(values["low"]) and _is_number(values["high"])):
            raise UserError(f"{spec!r}: low and high of a range must be numbers")
        if "log" in values and not isinstance(values["log"], bool):
            raise UserError(f"{spec!r}: log must be true or false")
        return Range(values["low"], values["high"], values.get("log"), values.get("step"))
    if isinstance(spec, dict):
        raise UserError(f"{spec!r}: a mapping is a range {{low, high}} or {{choices: [...]}}")
    if isinstance(spec, list):
        values = [number(v) for v in spec]
        if len(values) == 2 and all(_is_number(v) for v in values):
            if strict and all(_is_int(v) for v in values):
                low, high = values
                raise UserError(
                    f"[{low}, {high}] could be the range {low}..{high} or one of the two values; "
                    f"write {{low: {low}, high: {high}}} or {{choices: [{low}, {high}]}}"
                )
            return Range(values[0], values[1])
        if not values:
            raise UserError("[] is an empty list of choices; give the values to choose from, or one fixed value")
        return Choices(tuple(values))
    return Fixed(spec)


def number(value: Any) -> Any:
    """A number YAML read as text ("1e-3") as the number; any other value unchanged."""
    if isinstance(value, str):
        if _DECIMAL_COMMA.match(value):
            raise UserError(f"{value!r} is not a number; write {value.replace(',', '.')} (a decimal point)")
        for kind in (int, float):  # "2" is the whole number 2, "1e-3" a float
            try:
                return kind(value)
            except ValueError:
                pass
    return value


def numbers(spec: Any) -> Any:
    """``spec`` with every number YAML read as text made a number (in lists, ranges, choices)."""
    if isinstance(spec, list):
        return [number(v) for v in spec]
    if isinstance(spec, dict):
        return {k: [number(v) for v in vs] if k == "choices" and isinstance(vs, list) else number(vs) if k in _RANGE_KEYS else vs
                for k, vs in spec.items()}  # fmt: skip
    return number(spec)


def values_of(spec: Any) -> list[Any]:
    """Every value a spec names: a fixed value, both ends of a range, every choice."""
    searched = parse(spec)
    if isinstance(searched, Fixed):
        return [searched.value]
    if isinstance(searched, Range):
        return [searched.low, searched.high]
    return list(searched.values)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class TrialSpace:
    """What a strategy's ``suggest`` draws from: an Optuna trial (define-by-run), the
    parameter names prefixed (``finetune.lr_head``); or, with ``corner=k`` and no
    trial, a corner of the space: ranges at their low (k even) or high (k odd) end,
    the k-th of every set of choices."""

    def __init__(self, trial, prefix: str, where: str, corner: int | None = None, middle: bool = False):
        self.trial, self.prefix, self.where = trial, prefix, where
        self.middle = middle  # no trial: every range at its middle (geometric on a log scale), the middle choice
        self._at = f"{where}: " if where else ""  # error prefix ("" where the caller names the place)
        self.values: dict[str, Any] = {}  # every value handed out, fixed ones too
        self.searched: list[str] = []  # names that are sampled (without the prefix)
        self.result: Any = None  # what the suggest function returned (dry runs keep it)
        self.corner = corner
        self.widest = 2  # the most choices any value has: how many corners visit every choice

    def suggest(self, name: str, spec: Any, *, log: bool = False) -> Any:
        try:
            searched = parse(spec)
        except UserError as exc:
            raise UserError(f"{self._at}{name}: {exc}") from exc
        value = searched.value if isinstance(searched, Fixed) else self._draw(name, searched, log)
        self.values[name] = value
        return value

    def _draw(self, name: str, searched: Range | Choices, log: bool) -> Any:
        import optuna

        self.searched.append(name)
        if self.middle:
            return _middle(searched, searched.log if isinstance(searched, Range) and searched.log is not None else log)
        trial = self.trial if self.corner is None else optuna.create_study().ask()  # a probe: Optuna checks the spec
        key = self.prefix + name if self.corner is None else "x"
        try:
            if isinstance(searched, Choices):
                value = trial.suggest_categorical(key, list(searched.values))
                self.widest = max(self.widest, len(searched.values))
                return value if self.corner is None else searched.values[self.corner % len(searched.values)]
            on_log = searched.log if searched.log is not None else log
            if searched.integer:
                step = searched.step or 1
                value = trial.suggest_int(key, searched.low, searched.high, log=on_log, step=step)
                high = searched.low + (searched.high - searched.low) // step * step
            else:
                value = trial.suggest_float(
                    key, float(searched.low), float(searched.high), log=on_log, step=searched.step
                )
                high = float(searched.high)
        except (ValueError, TypeError) as exc:
            raise UserError(f"{self._at}{name}: bad search range {searched}: {exc}") from exc
        if self.corner is None:
            return value
        return (int(searched.low) if searched.integer else float(searched.low)) if self.corner % 2 == 0 else high


def _middle(searched: Range | Choices, log: bool) -> Any:
    """The middle of a range (geometric on a log scale; whole numbers rounded onto the
    step), or the middle choice (the lower of two middles)."""
    if isinstance(searched, Choices):
        return searched.values[(len(searched.values) - 1) // 2]
    low, high = float(searched.low), float(searched.high)
    mid = math.sqrt(low * high) if log and low > 0 else (low + high) / 2
    if searched.integer:
        step = searched.step or 1
        return int(searched.low + round((mid - searched.low) / step) * step)
    if searched.step:
        return low + round((mid - low) / searched.step) * searched.step
    return mid


def dry_run(fn, where: str) -> TrialSpace:
    """Run a suggest function on a throwaway in-memory trial, to check its ranges
    (its return value is kept as ``space.result``)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = TrialSpace(optuna.create_study().ask(), "", where)
    space.result = fn(space)
    return space


def corners(suggest) -> list[Any]:
    """What ``suggest`` returns at the corners of its space: every range at its low and
    at its high end, and every choice of every categorical value at least once."""
    out, k, widest = [], 0, 2
    while k < min(widest, 16):
        space = TrialSpace(None, "", "", corner=k)
        out.append(suggest(space))
        widest, k = max(widest, space.widest), k + 1
    return out
