"""The data walk of one `tlbench run`: which of tlbench's modules the run enters, which
functions call across modules, and how many of those calls go back up a layer.

    python benchmarks/datawalk.py [--trials N] [--out FILE]

Runs examples/smoke.yaml (synthetic images, tiny timm models, no weights) with a few
trials in this process under ``sys.setprofile``: every call from a function of one tlbench
module into a function of another (through torch, Optuna or pluggy in between) is a
link; a link from a lower layer into a higher one goes back up (a callback, a hook). The
layers come from this checkout's tests/unit/test_layers.py, so the same script measures
an older checkout (run it with PYTHONPATH=<that checkout>). Counts, not seconds: the
profiler slows the run, and the figures do not depend on the machine.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import yaml


def _layers(root: Path):
    spec = importlib.util.spec_from_file_location("_layers", root / "tests" / "unit" / "test_layers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.LEVEL


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    import tlbench
    from tlbench import cli

    root = Path(tlbench.__file__).resolve().parent.parent
    level = _layers(root)
    package = root / "tlbench"
    cfg = yaml.safe_load((root / "examples" / "smoke.yaml").read_text())
    work = Path(tempfile.mkdtemp(prefix="datawalk-"))
    cfg["results_dir"] = str(work / "results")
    cfg["search"]["n_trials"] = args.trials
    config = work / "walk.yaml"
    config.write_text(yaml.safe_dump(cfg))

    units: dict[str, tuple[str, int]] = {}  # file -> (module name, layer)

    def unit_of(filename: str):
        got = units.get(filename)
        if got is None:
            path = Path(filename)
            try:
                rel = path.resolve().relative_to(package)
            except ValueError:
                got = ("", -1)
            else:
                name = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
                top = rel.parts[0] if len(rel.parts) > 1 else rel.stem
                got = (name, level.get(top, level.get("__init__", 0)))
            units[filename] = got
        return got

    entered = collections.Counter()  # module -> calls into it from another module
    calls = collections.Counter()  # (caller function, callee function) across modules -> times
    up_calls = 0

    def profile(frame, event, arg):
        nonlocal up_calls
        if event != "call":
            return
        name, lvl = unit_of(frame.f_code.co_filename)
        if not name:
            return
        caller = frame.f_back
        while caller is not None and not unit_of(caller.f_code.co_filename)[0]:
            caller = caller.f_back  # through torch, Optuna, pluggy: the tlbench function that led here
        if caller is None:
            return
        cname, clvl = unit_of(caller.f_code.co_filename)
        if cname == name:
            return
        entered[name] += 1
        key = (f"{cname}.{caller.f_code.co_name}", f"{name}.{frame.f_code.co_name}", clvl, lvl)
        calls[key] += 1
        if lvl > clvl:
            up_calls += 1

    sys.setprofile(profile)
    try:
        code = cli.main(["run", str(config), "--run", "walk"])
    finally:
        sys.setprofile(None)
    result = {
        "checkout": str(root),
        "trials": args.trials,
        "exit": code,
        "modules_entered": len(entered),
        "module_links": len({(a.rsplit(".", 1)[0], b.rsplit(".", 1)[0]) for a, b, _, _ in calls}),
        "module_links_up": len({(a.rsplit(".", 1)[0], b.rsplit(".", 1)[0]) for a, b, lo, hi in calls if hi > lo}),
        "function_links": len(calls),
        "function_links_up": sum(hi > lo for _, _, lo, hi in calls),
        "calls_across_modules": sum(calls.values()),
        "calls_up_a_layer": up_calls,
        "most_entered": entered.most_common(6),
        "up": sorted({f"{a} -> {b}" for a, b, lo, hi in calls if hi > lo}),
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
