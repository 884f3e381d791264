"""TensorBoard: one event-file folder per trial, under <dir>/<dataset>/trial-NNNN/.

The validation curve is written as it trains (``val_accuracy`` per epoch), the rest
when the trial ends; the parameters go in as text and, for TensorBoard's HParams
tab, as hyperparameters. New files only: event files are named by time, host and
process, so a resumed run or a second worker never overwrites one.
"""

from __future__ import annotations

import tlbench
from tlbench.types import TrackerRequest, TrialInfo, UserError, config_path
from tlbench_tracking.metrics import final_metrics, parameters


class TensorBoardTracker:
    def __init__(self, request: TrackerRequest):
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        self._writer_type = SummaryWriter
        given = request.options.get("dir")
        if given is None and request.run.folder is None:
            raise UserError(
                "trackers: tensorboard: this process has no run folder; set 'dir:' to a folder for the event files"
            )
        self.root = (
            config_path(str(given), request.base_dir, "trackers: tensorboard: dir")
            if given is not None
            else request.run.folder / "tensorboard"
        )
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"trackers: tensorboard: dir {self.root} is a file; give a folder")
        self.writers = {}
        self.steps: dict[tuple[str, int], int] = {}  # training steps logged so far, per trial

    @tlbench.hookimpl
    def tlbench_trial_started(self, trial: TrialInfo) -> None:
        writer = self._writer_type(str(self.root / trial.dataset / f"trial-{trial.number:04d}"))
        self.writers[(trial.study, trial.number)] = writer
        writer.add_text("parameters", "\n".join(f"- {k}: {v}" for k, v in parameters(trial).items()), 0)

    @tlbench.hookimpl
    def tlbench_epoch_done(
        self, trial: TrialInfo, epoch: int, val_accuracy: float, learning_rates: dict[str, list[float]]
    ) -> None:
        writer = self.writers.get((trial.study, trial.number))
        if writer is None:
            return
        writer.add_scalar("val_accuracy", val_accuracy, epoch)
        done = self.steps.get((trial.study, trial.number), 0)  # the learning rates by training step, across epochs
        for name, rates in learning_rates.items():
            for i, rate in enumerate(rates):
                writer.add_scalar(f"lr/{name}", rate, done + i + 1)
        self.steps[(trial.study, trial.number)] = done + max((len(r) for r in learning_rates.values()), default=0)

    @tlbench.hookimpl
    def tlbench_trial_finished(self, trial: TrialInfo) -> None:
        writer = self.writers.pop((trial.study, trial.number), None)
        self.steps.pop((trial.study, trial.number), None)
        if writer is None:
            return  # it never started in this process (a surplus trial, another worker's)
        steps = max(len(trial.curve), 1)
        for name, value in final_metrics(trial).items():
            if name != "val_accuracy":
                writer.add_scalar(name, value, steps)
        writer.add_text("state", f"{trial.state}{': ' + trial.reason if trial.reason else ''}", steps)
        writer.close()

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()
