"""One path for every training run here: settings, run folder, Trainer, fit and test, results.

:func:`train_mlp` trains one MLP setting (``scripts/train_mlp.py``); the fused sweep
(:func:`lightning_modules.fused.train_fused`) goes through the same pieces: the same
:class:`TrainConfig`, the Trainer of :func:`make_trainer`, :func:`fit_and_test`, and one
:class:`RunResults` per run folder for ``results.json`` and TensorBoard's HParams.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from datamodules import SignMNISTDataModule
from datamodules.augment import AugmentConfig, BatchAugmenter
from labkit.errors import SettingsError
from labkit.files import UnusableOutput, write_json
from labkit.progress import Interrupted, report
from lightning_modules.callbacks import AtomicCheckpointIO, EpochTimer, HistoryLogger, InterruptWatch, SharedRunName
from lightning_modules.mlp_module import MLPClassifier, parameter_report
from lightning_modules.pictures import HistogramLogger, write_pictures


@dataclass
class TrainConfig:
    lr: float = 1e-3
    act: str = "relu"
    epochs: int = 100
    batch_size: int = 32
    seed: int = 22
    data_dir: str | None = None
    logdir: str = "runs"
    accelerator: str = "auto"
    devices: str | int = 1
    num_nodes: int = 1  # machines training together, data-parallel (their processes started by srun or torchrun)
    strategy: str = "auto"
    limit_rows: int | None = None  # first rows of each CSV only, for quick trials and tests
    echo: bool = True  # report one line per epoch
    augment: float = 0.0  # strength of training-image augmentation: 0 none, 1 datamodules.augment's ranges
    pictures: bool = True  # TensorBoard pictures (confusion matrix, mistakes, projector) once at the end
    histograms: bool = False  # weight and gradient histograms every epoch
    name: str | None = None  # the run folder under logdir/mlp (default: run_name(act, lr, augment))
    flush_denormal: bool = True  # CPU: treat float denormals as zero while training (see flush_denormals)


_flush_depth = 0  # nested flush_denormals blocks: only the outermost one restores the default


@contextmanager
def flush_denormals(enabled: bool = True):
    """Within the block, torch's CPU arithmetic treats float denormals (below 1.2e-38 in float32)
    as zero.

    Once a model fits its training set, some gradients and Adam's averages fall that low, and x86
    CPUs compute on such numbers many times slower (``benchmarks/bench_denormals.py``). Their
    effect on a weight is far below float32's resolution of it; TensorFlow, and so the
    reference's Keras, flushes them in its CPU threads too.

    The setting belongs to each thread, and torch's worker threads take the main thread's when
    they are started, at the process's first parallel operation: ``train_mlp`` and
    ``train_fused`` run whole within this block, so that in a script (where they come first)
    every thread flushes. Nested blocks are fine. Without CPU support (``torch.set_flush_denormal``
    returns False) nothing changes. The default is restored in the calling thread when the
    outermost block ends.
    """
    global _flush_depth
    if not enabled:
        yield
        return
    if _flush_depth == 0 and not torch.set_flush_denormal(True):
        yield
        return
    _flush_depth += 1
    try:
        yield
    finally:
        _flush_depth -= 1
        if _flush_depth == 0:
            torch.set_flush_denormal(False)


def format_lr(lr: float) -> str:
    """A learning rate as few digits as tell it apart: 1e-03, 1.5e-03, 2e-03 (never rounded)."""
    return np.format_float_scientific(lr, trim="-", exp_digits=2)


def run_name(act: str, lr: float, augment: float = 0.0, seed: int | None = None) -> str:
    """Folder name of a setting, e.g. ``relu_lr1e-05``, ``relu_lr1e-03_aug1``, ``linear_lr1e-05_seed23``:
    runs of different settings overlay in TensorBoard by name, and two settings never share one."""
    name = f"{act}_lr{format_lr(lr)}"
    if augment:
        name += f"_aug{augment:g}"
    if seed is not None:
        name += f"_seed{seed}"
    return name


def claim_run_folder(root: str | os.PathLike, name: str) -> str:
    """Create a fresh run folder under ``root`` and return its name: ``name``, else ``name_run2``,
    ``name_run3``...

    Never an earlier run's folder (its events would mix with the new ones), and never the one a
    run started at the same moment takes: each folder is made by exclusive creation, so of two
    runs only one gets it. :class:`~labkit.files.UnusableOutput` (naming the path and the reason)
    when ``root`` cannot hold folders at all: a file in the way, no permission, a read-only disk.
    """
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        version, n = name, 1
        while True:
            try:
                (root / version).mkdir()
                return version
            except FileExistsError:
                n += 1
                version = f"{name}_run{n}"
    except OSError as exc:
        raise UnusableOutput(exc.errno, exc.strerror or str(exc), str(root)) from None


def _first_process() -> bool:
    """Whether this is the first process of a run: global rank 0, known from the variables every
    launcher sets before Lightning is asked (Lightning's own for the processes it starts,
    torchrun's RANK, Slurm's SLURM_PROCID, NODE_RANK for the machines)."""
    return all(os.environ.get(variable, "0") == "0" for variable in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def device_description(trainer: L.Trainer) -> str:
    device = trainer.strategy.root_device
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)} x{trainer.world_size}"
    return f"cpu: {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, x{trainer.world_size} processes"


def datamodule_for(config: TrainConfig, batches_per_step: int = 1) -> SignMNISTDataModule:
    """The Sign-MNIST splits ``config`` asks for, loaded; ``batches_per_step`` as the DataModule takes it."""
    augment = AugmentConfig(strength=config.augment) if config.augment else None
    datamodule = SignMNISTDataModule(config.data_dir, batch_size=config.batch_size, seed=config.seed, limit_rows=config.limit_rows,
                                     augment=augment, batches_per_step=batches_per_step)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def make_trainer(config: TrainConfig, *, logger, callbacks=()) -> L.Trainer:
    """The Trainer of every run here, solo or fused.

    ``config`` gives the epochs, accelerator, devices, nodes and strategy. Checkpoints are kept
    only when ``callbacks`` hold a ``ModelCheckpoint``, and written atomically
    (:class:`~lightning_modules.callbacks.AtomicCheckpointIO`); the loggers report one line per
    epoch instead of a progress bar; no sanity validation. Lightning's complaints about
    impossible settings are raised as :class:`~labkit.errors.SettingsError`.
    """
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    callbacks = list(callbacks)
    try:
        return L.Trainer(
            max_epochs=config.epochs,
            accelerator=config.accelerator,
            devices=config.devices,
            num_nodes=config.num_nodes,
            strategy=config.strategy,
            logger=logger,
            callbacks=callbacks,
            plugins=[AtomicCheckpointIO()],
            enable_checkpointing=any(isinstance(callback, ModelCheckpoint) for callback in callbacks),
            enable_progress_bar=False,
            enable_model_summary=False,
            log_every_n_steps=50,
            num_sanity_val_steps=0,
        )
    except (MisconfigurationException, ValueError, RuntimeError) as exc:
        message = " ".join(str(exc).split())  # one line
        raise SettingsError(f"cannot set up training with accelerator={config.accelerator!r}, devices={config.devices!r}, "
                            f"num_nodes={config.num_nodes!r}, strategy={config.strategy!r}: {message}") from None


@dataclass
class Fit:
    """What :func:`fit_and_test` measured."""

    trainer: L.Trainer
    train_seconds: list[float]  # each training epoch, validation excluded
    total_seconds: float  # fit and test
    test_metrics: dict[str, float]  # ``test/loss``, ``test/acc`` ({} when not tested)

    @property
    def seconds_per_epoch(self) -> float | None:
        """The median training epoch."""
        return statistics.median(self.train_seconds) if self.train_seconds else None

    @property
    def device(self) -> str:
        return device_description(self.trainer)


def fit_and_test(config: TrainConfig, model: L.LightningModule, datamodule, *, logger, callbacks=(), test: bool = True,
                 announce: str | None = None) -> Fit:
    """Fit ``model`` on ``datamodule`` with :func:`make_trainer`'s Trainer, validating every epoch,
    then test it (unless ``test`` is False).

    Ctrl-C or SIGTERM during fit or test raises :class:`~labkit.progress.Interrupted` saying
    where ("at epoch 3/100", "while testing"), never Lightning's ``SystemExit``. With
    ``announce`` (the run's name), the first process reports the device it trains on.
    """
    timer, watch = EpochTimer(), InterruptWatch()
    trainer = make_trainer(config, logger=logger, callbacks=[timer, watch, *callbacks])
    if announce and trainer.is_global_zero:
        report(f"{announce}: training on {device_description(trainer)}")
    started = time.perf_counter()
    try:
        interruptible(trainer.fit, watch, model, datamodule)
        test_metrics = interruptible(trainer.test, watch, model, datamodule, verbose=False)[0] if test else {}
    except KeyboardInterrupt:
        raise Interrupted(watch.where(config.epochs)) from None
    return Fit(trainer, list(timer.train_seconds), time.perf_counter() - started, test_metrics)


def interruptible(trainer_fn, watch: InterruptWatch, *args, **kwargs):
    """Call ``trainer.fit``/``trainer.test``, turning Lightning's exits on a signal into KeyboardInterrupt.

    On Ctrl-C (and the scripts' SIGTERM, also a KeyboardInterrupt) Lightning tears down, logs
    "Detected KeyboardInterrupt", leaves SIGINT ignored and calls ``sys.exit(1)``; on a SIGTERM
    it handles itself it raises ``SIGTERMException``, a ``SystemExit`` with no code, which would
    end the process with exit code 0. The caller wants a KeyboardInterrupt it can account for
    instead (never a success), and a second Ctrl-C to work again afterwards.
    """
    handler = signal.getsignal(signal.SIGINT)
    try:
        return trainer_fn(*args, **kwargs)
    except SystemExit:
        if not watch.interrupted:
            raise
        raise KeyboardInterrupt from None
    finally:
        if handler is not None:
            signal.signal(signal.SIGINT, handler)


def best_epoch(history: list[dict[str, float]]) -> dict[str, float]:
    """The first epoch's row with the highest validation accuracy ({} without one)."""
    return max(history, key=lambda row: row.get("val/acc", float("-inf"))) if history else {}


@dataclass
class RunResults:
    """One run folder's results: a solo run's (:func:`train_mlp`) or a fused sweep member's.

    :meth:`as_dict` is the layout of ``results.json``, the same for both: every
    :class:`TrainConfig` field but ``echo``, then

    - ``run``, ``log_dir``: the run folder's name and path;
    - ``test_loss``, ``test_acc``: on the test split;
    - ``best_val_acc``, ``best_epoch``: the first epoch with the highest validation accuracy;
    - ``history``: one row per epoch, ``epoch``, ``train/loss``, ``train/acc``, ``val/loss``, ``val/acc``;
    - ``params``: parameter counts as Keras counts them (:func:`~lightning_modules.mlp_module.parameter_report`);
    - ``seconds_per_epoch``: the median training epoch, validation excluded (fused: one epoch of all members);
    - ``total_seconds``: fit and test; ``device``, ``world_size``;
    - ``rows``: training, validation and test rows;
    - ``best_checkpoint``: the best epoch's checkpoint (None for a fused member: none are kept);
    - ``augmentation``: the training images' augmentation, or None;
    - ``pictures``: the TensorBoard tags of the end-of-training pictures;
    - ``fused`` (a fused member only): ``members``, ``member`` (its place), ``init_seed``, ``data_seed``.
    """

    config: TrainConfig
    run: str
    log_dir: str
    model: MLPClassifier  # the trained model (a fused member as its own MLPClassifier)
    datamodule: SignMNISTDataModule
    fit: Fit
    history: list[dict[str, float]]
    test_loss: float | None
    test_acc: float | None
    best_checkpoint: str | None = None
    fused: dict | None = None

    def as_dict(self, pictures: list[str] = ()) -> dict:
        best, arrays = best_epoch(self.history), self.datamodule.arrays
        return {
            **{key: value for key, value in asdict(self.config).items() if key != "echo"},
            "run": self.run,
            "log_dir": self.log_dir,
            "test_loss": self.test_loss,
            "test_acc": self.test_acc,
            "best_val_acc": best.get("val/acc"),
            "best_epoch": best.get("epoch"),
            "history": self.history,
            "params": parameter_report(self.model),
            "seconds_per_epoch": self.fit.seconds_per_epoch,
            "total_seconds": self.fit.total_seconds,
            "device": self.fit.device,
            "world_size": self.fit.trainer.world_size,
            "rows": {"train": len(arrays.train_labels), "val": len(arrays.val_labels), "test": len(arrays.test_labels)},
            "best_checkpoint": self.best_checkpoint,
            "augmentation": self.datamodule.augment.as_dict() if self.datamodule.augment else None,
            "pictures": list(pictures),
            **({"fused": self.fused} if self.fused is not None else {}),
        }

    def write(self, board: TensorBoardLogger) -> dict:
        """On the first process, into ``board`` (the run's TensorBoard logger): the pictures (if
        the config asks), HParams with the final numbers, and ``results.json`` (last,
        atomically). Returns the results dictionary, on every process."""
        if not self.fit.trainer.is_global_zero:
            return self.as_dict()
        results = self.as_dict(write_run_pictures(self.config, self.datamodule, self.model, board) if self.config.pictures else ())
        # The HParams tab with the final numbers (not Lightning's -1 placeholder).
        board.log_hyperparams(
            {key: getattr(self.config, key) for key in ("lr", "act", "epochs", "batch_size", "seed", "augment")},
            metrics={"hparams/test_acc": results["test_acc"], "hparams/test_loss": results["test_loss"],
                     "hparams/best_val_acc": results["best_val_acc"] or 0.0},
        )
        board.finalize("success")
        write_json(Path(board.log_dir) / "results.json", results)
        return results


def write_run_pictures(config: TrainConfig, datamodule, model, tensorboard) -> list[str]:
    """The end-of-training pictures in TensorBoard; the tags written."""
    arrays, augment = datamodule.arrays, None
    if datamodule.augment is not None:
        # The training grid shows the images as the network saw them: augmented, from the run's seed.
        augment = partial(BatchAugmenter(datamodule.augment), generator=torch.Generator().manual_seed(config.seed))
    return write_pictures(tensorboard.experiment, model, arrays.test_images, arrays.test_labels, arrays.train_images,
                          augment=augment, seed=config.seed)


def train_mlp(config: TrainConfig) -> dict:
    """Train, validate each epoch, test; write TensorBoard events and ``results.json``.

    Returns the results dictionary (:class:`RunResults`), also written to
    ``<logdir>/mlp/<run name>/results.json``. Under DDP every process runs this function and
    returns the same results: the first process claims the run folder, and the others take its
    name from it once the processes are connected (:class:`~lightning_modules.callbacks.SharedRunName`).
    """
    with flush_denormals(config.flush_denormal):
        L.seed_everything(config.seed, workers=True, verbose=False)
        datamodule = datamodule_for(config)
        model = MLPClassifier(lr=config.lr, act=config.act, num_classes=datamodule.num_classes).adapt(datamodule.train_images)
        root = Path(config.logdir) / "mlp"
        name = config.name or run_name(config.act, config.lr, config.augment)
        first = _first_process()
        # The other processes (under torchrun or srun, or the ranks Lightning starts) hold the
        # name as a label until the first process's arrives; they write nothing.
        shared = SharedRunName(claim_run_folder(root, name) if first else name)
        try:
            return _fit_test_and_write(config, datamodule, model, shared)
        except BaseException:
            # A run without results.json is no run: take its folder away (events, checkpoint), so
            # TensorBoard shows no stump and the next run of this setting gets this name; whatever
            # stopped it (Ctrl-C, SIGTERM, a full disk, settings Lightning refused).
            if first:
                shutil.rmtree(root / shared.name, ignore_errors=True)
            raise


def _fit_test_and_write(config: TrainConfig, datamodule, model: MLPClassifier, shared: SharedRunName) -> dict:
    tensorboard = TensorBoardLogger(config.logdir, name="mlp", version=shared.name, default_hp_metric=False)
    history = HistoryLogger(echo=config.echo, total_epochs=config.epochs)
    checkpoint = ModelCheckpoint(monitor="val/acc", mode="max", filename="best-{epoch}", save_last=False)
    try:
        fit = fit_and_test(config, model, datamodule, logger=[tensorboard, history], announce=shared.name,
                           callbacks=[shared, checkpoint] + ([HistogramLogger()] if config.histograms else []))
        log_dir = os.path.join(os.path.dirname(tensorboard.log_dir), shared.name)
        return RunResults(config, shared.name, log_dir, model, datamodule, fit, history.history, fit.test_metrics["test/loss"],
                          fit.test_metrics["test/acc"], best_checkpoint=checkpoint.best_model_path).write(tensorboard)
    except KeyboardInterrupt as exc:  # (train_mlp removes the run folder)
        where = str(exc) if isinstance(exc, Interrupted) else "while writing the results"
        raise Interrupted(f"{where} of {shared.name}; nothing written for this run") from None
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:  # say where
            raise OSError(exc.errno, exc.strerror, tensorboard.log_dir) from exc
        raise
