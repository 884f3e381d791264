"""`tlbench --help`, `tlbench plugins` and plugin authors' kits stay fast: the command line,
the conformance kit and the records plugins import load no torch, timm or Optuna (each is
imported in a fresh interpreter, so what another test imported does not hide it)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "timm", "optuna", "torchvision", "pandas")


@pytest.mark.parametrize(
    "module", ["tlbench", "tlbench.cli", "tlbench.testing", "tlbench.types", "tlbench.host.hookspecs"]
)
def test_importing_the_light_modules_loads_no_heavy_library(module):
    code = f"import sys, {module}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "", f"import {module} loaded {out.stdout.strip()}"
