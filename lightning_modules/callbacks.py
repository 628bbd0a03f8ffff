"""Callbacks used by the training scripts, and the checkpoint writer of their Trainers."""

from __future__ import annotations

import io
import time

import torch
from lightning import Callback
from lightning.pytorch.loggers import Logger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from labkit.files import atomic_path
from labkit.progress import report


class EpochTimer(Callback):
    """Wall-clock seconds of each training epoch, validation excluded.

    Lightning runs validation inside the training epoch (before ``on_train_epoch_end``), so the
    validation time is measured separately and taken off.
    """

    def __init__(self) -> None:
        self.train_seconds: list[float] = []
        self._start = 0.0
        self._val_start = 0.0
        self._val_seconds = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._val_seconds = 0.0
        self._start = time.perf_counter()

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._val_start = time.perf_counter()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._val_seconds += time.perf_counter() - self._val_start

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.train_seconds.append(time.perf_counter() - self._start - self._val_seconds)


class InterruptWatch(Callback):
    """Notes a Ctrl-C or SIGTERM during fit or test, and where it fell.

    Lightning turns a KeyboardInterrupt (Ctrl-C, and the scripts' SIGTERM) into ``sys.exit(1)``
    and its own SIGTERM handling into :class:`SIGTERMException`, a ``SystemExit`` whose code is
    None, which would end a process with exit code 0; :func:`~lightning_modules.training.interruptible`
    turns both back into KeyboardInterrupt when this watch saw them.
    """

    def __init__(self) -> None:
        self.interrupted = False
        self.stage: str | None = None
        self.epoch = 0

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            self.interrupted = True
            self.stage = trainer.state.fn.value if trainer.state.fn is not None else None
            self.epoch = trainer.current_epoch

    def where(self, total_epochs: int) -> str:
        if self.stage == "test":
            return "while testing"
        return f"at epoch {min(self.epoch + 1, total_epochs)}/{total_epochs}"


class SharedRunName(Callback):
    """The run folder's name, as the first process chose it, known to every process.

    Under DDP only the first process claims the run folder (another run may already hold the
    name it wanted, so it may end in ``_run2``); the others start with a label. In ``setup``,
    once the processes are connected, every one takes :attr:`name` from global rank 0 through
    the strategy's ``broadcast``, so that all of them report the same run. With one process the
    name stays as it is.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.name = trainer.strategy.broadcast(self.name, src=0)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written under a temporary name beside their final one and renamed into place.

    Lightning's own writer (through fsspec) stages a checkpoint in the system's temporary folder
    and copies it over when that is another file system; a disk that fills during the copy leaves
    a truncated checkpoint at the final name and the staged copy behind. Here a failed write
    (a full disk, Ctrl-C) leaves neither: the temporary file is removed and the OSError names the
    checkpoint's path.
    """

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)  # serialised in memory first: a write error is then an OSError
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as stream:
                stream.write(buffer.getbuffer())


class MetricsOnlyLogger(Logger):
    """A logger that keeps or passes on the metrics Lightning hands it and writes nothing of its
    own: no folder, and no hyperparameters (a run's HParams are written with its final numbers,
    ``training.RunResults``). Subclasses name themselves and implement ``log_metrics``."""

    name = "metrics"
    version = 0

    @rank_zero_only
    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass


class HistoryLogger(MetricsOnlyLogger):
    """Keeps every epoch's logged metrics in memory, for results files and plots.

    A logger rather than a callback: Lightning hands loggers the epoch's metrics after the
    module's own ``on_*_epoch_end`` hooks have logged them, which callbacks do not see in order.
    """

    name = "history"

    def __init__(self, echo: bool = False, total_epochs: int | None = None) -> None:
        super().__init__()
        self.echo, self.total_epochs = echo, total_epochs
        self._by_epoch: dict[int, dict[str, float]] = {}

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        metrics = {key: value for key, value in metrics.items() if key.startswith(("train/", "val/", "epoch"))}
        if "epoch" not in metrics or len(metrics) == 1:  # test metrics belong to no epoch
            return
        epoch = int(metrics["epoch"]) + 1
        row = self._by_epoch.setdefault(epoch, {"epoch": epoch})
        row.update({key: float(value) for key, value in metrics.items() if key != "epoch"})
        # Validation is logged before training within an epoch, so train/loss completes the row.
        if self.echo and "train/loss" in metrics:
            report(self.format_row(row, self.total_epochs))

    @staticmethod
    def format_row(row: dict[str, float], total_epochs: int | None = None) -> str:
        of_total = f"/{total_epochs}" if total_epochs else ""
        values = "  ".join(f"{key} {row[key]:.4f}" for key in sorted(row) if key != "epoch")
        return f"epoch {row['epoch']}{of_total}  {values}"

    @property
    def history(self) -> list[dict[str, float]]:
        """One row per epoch: ``{"epoch": 1, "train/loss": ..., "val/acc": ...}``."""
        return [self._by_epoch[epoch] for epoch in sorted(self._by_epoch)]
