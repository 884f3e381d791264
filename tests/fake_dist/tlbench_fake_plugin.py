"""The plugin module of the fake distribution tlbench-fake (see tests/test_plugins.py)."""

import tlbench
from tlbench.types import Phase, Strategy


@tlbench.hookimpl
def tlbench_strategies():
    yield Strategy(
        name="fake_head_only",
        options={"epochs": 1, "lr_head": 0.01},
        suggest=lambda space, o: {k: space.suggest(k, v) for k, v in o.items()},
        phases=lambda p, n: [Phase("head", p["epochs"], n, 0.0, p["lr_head"])],
        description="head only, from an installed distribution",
    )
