"""A finished (or running) run read back: the run folder, the tables people read, export,
rendering. Imports only the store, the config schema and the base layer; no search code.

Layers and the module map: docs/internals.md.
"""


def __getattr__(name: str):
    """tlbench 0.6's module ``tlbench.results`` is ``tlbench.results.runfolder``: its names, with a warning."""
    import importlib

    from tlbench import _moved

    if name.startswith("__") or name in {"runfolder", "tables", "export", "report"}:
        raise AttributeError(f"module 'tlbench.results' has no attribute {name!r}")
    runfolder = importlib.import_module("tlbench.results.runfolder")
    if not hasattr(runfolder, name):
        raise AttributeError(f"module 'tlbench.results' has no attribute {name!r}")
    _moved.warn(f"tlbench.results.{name}", f"tlbench.results.runfolder.{name}", stacklevel=3)
    return getattr(runfolder, name)
