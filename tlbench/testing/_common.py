"""What every check of the kit shares: the error, one line per problem, and the record's own fields."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tlbench.types import UserError


class ConformanceError(AssertionError):
    """A plugin breaks the plugin API; the message names the plugin, the record and the problem."""


def _fail(plugin: str, what: str, problem: str) -> ConformanceError:
    return ConformanceError(f"plugin {plugin}: {what}: {problem}")


def _call(plugin: str, what: str, fn):
    try:
        return fn()
    except ConformanceError:
        raise
    except UserError as exc:
        raise _fail(plugin, what, f"raised UserError: {exc}") from exc
    except Exception as exc:
        raise _fail(plugin, what, f"raised {type(exc).__name__}: {exc}") from exc


def _check_record(record: Any, options: Mapping[str, Any] | None, plugin: str, label: str) -> None:
    """The record's field types, and config options it does not declare."""
    from tlbench.host.contract import record_problem

    problem = record_problem(record)
    if problem:
        raise _fail(plugin, label, problem)
    unknown = [k for k in (options or {}) if k not in record.options]
    if unknown:
        raise _fail(plugin, label, f"option {unknown[0]!r} is not declared in the record's options")
