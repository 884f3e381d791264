"""Shared fixtures: tiny real configs on disk, and a fresh plugin manager per test."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

FAKE_DIST = Path(__file__).parent / "fake_dist"

# huggingface_hub reads this once, at import: set it before timm is imported.
os.environ["HF_HUB_OFFLINE"] = "1"


def one_line(capsys, code: int, *needles: str) -> str:
    """Exit code 2 and one error line, the last one (a run's progress lines may come before it)."""
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert [line for line in lines if line.startswith("tlbench: error:")] == lines[-1:], err
    assert "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[-1], err
    return lines[-1]


def without_root_override() -> list[str]:
    """A command prefix under which file permissions hold even for root: tests of unreadable
    files run as root in CI, and root reads anything. ``setpriv`` drops the capabilities
    that let root ignore permissions (util-linux; skipped where it is missing)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permissions cannot be tested")
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}"]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its bytes: to prove a command changed nothing."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def tiny_benchmark(**overrides) -> dict:
    """A real benchmark small enough to run in seconds on a CPU."""
    data = {
        "name": "tiny",
        "seed": 0,
        "datasets": [
            {
                "name": "synthetic",
                "classes": 3,
                "size": 16,
                "train_per_class": 8,
                "val_per_class": 4,
                "test_per_class": 4,
            }
        ],
        "backbones": [{"name": "timm:test_resnet", "pretrained": False}],
        "strategies": [{"name": "linear_probe", "epochs": 1}],
        "search": {"n_trials": 2, "startup_trials": 1},
        "training": {"batch_size": 8, "resolution": 32},
    }
    data.update(overrides)
    return data


@pytest.fixture
def write_config(tmp_path):
    """write_config(**overrides) -> path of a benchmarks.yaml in a fresh folder."""

    def write(data: dict | None = None, filename: str = "benchmarks.yaml", **overrides) -> Path:
        path = tmp_path / filename
        path.write_text(yaml.safe_dump(data if data is not None else tiny_benchmark(**overrides)))
        return path

    return write


@pytest.fixture(autouse=True)
def _offline_and_isolated(monkeypatch):
    """No installed third-party plugin leaks into a test."""
    monkeypatch.setenv("TLBENCH_LOAD_PLUGINS", "")


# component tier: files whose tests build and train tiny real models but never run a whole command
COMPONENT = {
    "test_backbones.py",
    "test_datasets.py",
    "test_features.py",
    "test_train.py",
    "test_plugins.py",
    "test_storage.py",
}


def pytest_collection_modifyitems(config, items):
    """Three tiers. tests/unit: no training, seconds (``python -m pytest tests/unit``).
    ``component``: tiny real models, no whole command (``-m component``). ``e2e``: whole
    runs, workers, signals, plugin packages (``-m e2e``). ``-m "not e2e"`` is unit + component."""
    unit = Path(__file__).parent / "unit"
    for item in items:
        path = Path(str(item.fspath))
        if unit in path.parents:
            continue
        item.add_marker(
            pytest.mark.component
            if path.name in COMPONENT and path.parent == Path(__file__).parent
            else pytest.mark.e2e
        )


class Signal:
    """A point another process reaches, waited for without polling: a named pipe in the
    test's folder whose path the process finds in TLBENCH_TEST_SIGNAL (inherited by the
    workers it starts). The process writes a byte (:data:`SIGNAL_PLUGIN`'s ``reached()``);
    :meth:`wait` blocks in ``select`` on the pipe and on the process (a pidfd): it returns
    when the byte comes, and fails at once, with the process's output, when the process
    ends first."""

    def __init__(self, folder: Path):
        self.path = folder / "reached.fifo"
        os.mkfifo(self.path)
        self.read = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        self.keep = os.open(self.path, os.O_WRONLY)  # held open: the pipe never reads as ended

    @property
    def env(self) -> dict[str, str]:
        return os.environ | {"TLBENCH_TEST_SIGNAL": str(self.path)}

    def wait(self, proc, timeout: float = 240) -> None:
        import select

        pidfd = os.pidfd_open(proc.pid)
        try:
            ready, _, _ = select.select([self.read, pidfd], [], [], timeout)
        finally:
            os.close(pidfd)
        if self.read in ready:
            os.read(self.read, 64)
            return
        if ready:
            pytest.fail(f"the process ended before the point: {proc.communicate()}")
        proc.kill()
        pytest.fail(f"the process did not reach the point in {timeout} s")

    def close(self) -> None:
        os.close(self.read)
        os.close(self.keep)


SIGNAL_PLUGIN = '''
import os


def reached():
    """Tell the test that waits on TLBENCH_TEST_SIGNAL (tests/conftest.py: Signal)."""
    path = os.environ.get("TLBENCH_TEST_SIGNAL")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(fd, b"1")
        finally:
            os.close(fd)
'''


@pytest.fixture
def reached(tmp_path):
    """A :class:`Signal` in the test's folder, closed afterwards."""
    signal = Signal(tmp_path)
    yield signal
    signal.close()
