"""Code written against 0.6's flat folder keeps working after the move to packages per
layer: every old module path imports the very module of its new path, with a
DeprecationWarning naming it, and the public modules did not move."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tlbench import _moved

PACKAGE = Path(__file__).resolve().parents[2] / "tlbench"

CHECK = """
import importlib, json, warnings
old, new = {old!r}, {new!r}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    module = importlib.import_module(old)
real = importlib.import_module(new)
print(json.dumps({{
    "same": module is real,
    "spec": module.__spec__.name,
    "warned": [str(w.message) for w in caught if w.category is DeprecationWarning],
}}))
"""


def _check(old: str, new: str) -> dict:
    import json

    out = subprocess.run(
        [sys.executable, "-c", CHECK.format(old=old, new=new)], capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_moved_module_exists_at_its_new_path():
    for old, package in _moved.MOVED.items():
        assert (PACKAGE / package / f"{old}.py").exists() or (PACKAGE / package / old).is_dir(), old
        assert not (PACKAGE / f"{old}.py").exists(), f"tlbench/{old}.py is back: remove it from _moved.MOVED"


def test_an_old_path_is_the_new_module_with_a_warning():
    got = _check("tlbench.sampling", "tlbench.search.sampling")
    assert got["same"] and got["spec"] == "tlbench.search.sampling"
    assert got["warned"] and "tlbench.search.sampling" in got["warned"][0]


def test_an_old_submodule_path_of_a_moved_package():
    got = _check("tlbench.builtins.backbones", "tlbench.host.builtins.backbones")
    assert got["same"] and got["spec"] == "tlbench.host.builtins.backbones"
    assert any("tlbench.host.builtins" in w for w in got["warned"])


def test_the_public_modules_import_without_a_warning():
    for public in ("tlbench", "tlbench.types", "tlbench.splits", "tlbench.testing"):
        assert _check(public, public)["warned"] == [], public


def test_names_that_left_a_split_module_are_still_found_there():
    """train.py and planning.py were split: their old names still resolve (with a warning
    where the name is no longer the module's own)."""
    code = (
        "import warnings; warnings.simplefilter('error')\n"
        "import tlbench.engine.train as t, tlbench.search.planning as p\n"
        "from tlbench.engine import basics\n"
        "from tlbench.search import calls, preflight\n"
        "for mod, name in ((t, 'frozen_features'), (t, 'pick_devices'), (p, 'preflight'), (p, 'load_splits')):\n"
        "    try:\n"
        "        getattr(mod, name)\n"
        "        print('silent', name)\n"
        "    except DeprecationWarning as w:\n"
        "        print(w)\n"
        "warnings.simplefilter('ignore')\n"
        "print(t.pick_devices is basics.pick_devices, p.preflight is preflight.preflight, p.adapt is calls.adapt)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    lines = out.stdout.strip().splitlines()
    assert "tlbench.engine.phasedata.frozen_features" in lines[0] and "tlbench.engine.basics.pick_devices" in lines[1]
    assert "tlbench.search.preflight.preflight" in lines[2] and "tlbench.search.calls.load_splits" in lines[3]
    assert lines[4] == "True True True"
