"""The hook implementation: the two trackers this package adds to tlbench.

A config turns them on by name::

    trackers:
      - name: tensorboard          # <run folder>/tensorboard/<dataset>/trial-0003/
      - name: mlflow               # file store <run folder>/mlruns, experiment tlbench/<benchmark>/<run>
        tracking_uri: sqlite:///mlflow.db   # or any MLflow tracking URI (relative paths: the config's folder)
"""

from __future__ import annotations

import tlbench
from tlbench.types import Tracker
from tlbench_tracking.checks import check_mlflow, check_tensorboard
from tlbench_tracking.mlflow_tracker import MLflowTracker
from tlbench_tracking.tensorboard import TensorBoardTracker

TLBENCH_PLUGIN_API = (1, 5)  # trackers and event hooks; Tracker.check; learning_rates in tlbench_epoch_done


@tlbench.hookimpl
def tlbench_trackers():
    yield Tracker(
        name="tensorboard",
        open=TensorBoardTracker,
        check=check_tensorboard,
        options={"dir": "folder for the event files, relative to the config (default: <run folder>/tensorboard)"},
        description="TensorBoard event files: a run per trial with its validation curve, test accuracy and costs",
    )
    yield Tracker(
        name="mlflow",
        open=MLflowTracker,
        check=check_mlflow,
        options={
            "tracking_uri": "MLflow tracking URI (default: the file store <run folder>/mlruns)",
            "experiment": "experiment name (default: tlbench/<benchmark>/<run>)",
        },
        description="MLflow runs (mlflow-skinny, no server): a run per trial with its parameters, curve and costs",
    )
