"""Train and test one MLP setting; the logic behind ``scripts/train_mlp.py`` and the sweep."""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import time
import warnings
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
from lightning_modules.callbacks import AtomicCheckpointIO, EpochTimer, HistoryLogger, InterruptWatch
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
    CPUs compute on such numbers many times slower: with 5% of its entries denormal, Adam's step
    over 5 M parameters took 3.6 times as long (``benchmarks/bench_denormals.py``). Their effect
    on a weight is far below float32's resolution of it; TensorFlow, and so the reference's
    Keras, flushes them in its CPU threads too.

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


_RUN_VERSION_ENV = "SIGN_MNIST_RUN_VERSION"


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


def _make_trainer(**kwargs) -> L.Trainer:
    """A Trainer, with Lightning's complaints about impossible settings turned into SettingsError."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        return L.Trainer(**kwargs)
    except (MisconfigurationException, ValueError, RuntimeError) as exc:
        message = " ".join(str(exc).split())  # one line
        raise SettingsError(f"cannot set up training with accelerator={kwargs['accelerator']!r}, "
                            f"devices={kwargs['devices']!r}, num_nodes={kwargs.get('num_nodes', 1)!r}, "
                            f"strategy={kwargs['strategy']!r}: {message}") from None


def train_mlp(config: TrainConfig) -> dict:
    """Train, validate each epoch, test; write TensorBoard events and ``results.json``.

    Returns the results dictionary (also written to ``<logdir>/mlp/<run name>/results.json``).
    """
    with flush_denormals(config.flush_denormal):
        return _train_mlp(config)


def _train_mlp(config: TrainConfig) -> dict:
    L.seed_everything(config.seed, workers=True, verbose=False)
    augment = AugmentConfig(strength=config.augment) if config.augment else None
    datamodule = SignMNISTDataModule(
        config.data_dir, batch_size=config.batch_size, seed=config.seed, limit_rows=config.limit_rows, augment=augment
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = MLPClassifier(lr=config.lr, act=config.act, num_classes=datamodule.num_classes)
    model.adapt(datamodule.train_images)

    # Under DDP every process runs this function; only the first one claims the folder (the
    # processes Lightning starts get its name through the environment; under torchrun or srun the
    # other ranks write nothing, so the name they use is only a label).
    root = Path(config.logdir) / "mlp"
    inherited = os.environ.get(_RUN_VERSION_ENV) if "LOCAL_RANK" in os.environ else None
    name = config.name or run_name(config.act, config.lr, config.augment)
    claimed = not inherited and _first_process()
    version = inherited or (claim_run_folder(root, name) if claimed else name)
    os.environ[_RUN_VERSION_ENV] = version
    try:
        return _fit_and_test(config, datamodule, model, version)
    except BaseException:
        # A run without results.json is no run: take its folder away (events, checkpoint), so
        # TensorBoard shows no stump and the next run of this setting gets this name; whatever
        # stopped it (Ctrl-C, SIGTERM, a full disk, settings Lightning refused).
        if claimed:
            shutil.rmtree(root / version, ignore_errors=True)
        raise
    finally:
        if not inherited:
            os.environ.pop(_RUN_VERSION_ENV, None)


def _fit_and_test(config: TrainConfig, datamodule, model, version: str) -> dict:
    tensorboard = TensorBoardLogger(config.logdir, name="mlp", version=version, default_hp_metric=False)
    history = HistoryLogger(echo=config.echo, total_epochs=config.epochs)
    timer = EpochTimer()
    watch = InterruptWatch()
    checkpoint = ModelCheckpoint(monitor="val/acc", mode="max", filename="best-{epoch}", save_last=False)
    trainer = _make_trainer(
        max_epochs=config.epochs,
        accelerator=config.accelerator,
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy=config.strategy,
        logger=[tensorboard, history],
        callbacks=[timer, checkpoint, watch] + ([HistogramLogger()] if config.histograms else []),
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=False,  # one summary line per epoch instead (HistoryLogger)
        enable_model_summary=False,
        log_every_n_steps=50,
        num_sanity_val_steps=0,
    )
    if trainer.is_global_zero:
        report(f"{version}: training on {device_description(trainer)}")
    started = time.perf_counter()
    try:
        with warnings.catch_warnings():
            # Our batches are already tensors in memory: Lightning's advice about DataLoader workers
            # does not apply.
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            # Metrics are logged per epoch, so the per-step logging interval is irrelevant.
            warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
            warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")  # Lightning-internal
            interruptible(trainer.fit, watch, model, datamodule)
            test_metrics = interruptible(trainer.test, watch, model, datamodule, verbose=False)[0]
        return _write_results(config, datamodule, model, trainer, tensorboard, history, timer, checkpoint,
                              test_metrics, time.perf_counter() - started)
    except BaseException as exc:  # (_train_mlp removes the run folder)
        if isinstance(exc, KeyboardInterrupt):
            raise Interrupted(f"{watch.where(config.epochs)} of {version}; nothing written for this run") from None
        if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:  # say where
            raise OSError(exc.errno, exc.strerror, tensorboard.log_dir) from exc
        raise


def _write_results(config, datamodule, model, trainer, tensorboard, history, timer, checkpoint, test_metrics, total_seconds) -> dict:
    """The results dictionary; on rank zero also HParams and ``results.json`` (written last, atomically)."""
    rows = history.history
    best = max(rows, key=lambda row: row.get("val/acc", float("-inf"))) if rows else {}
    results = {
        **{key: value for key, value in asdict(config).items() if key != "echo"},
        "run": tensorboard.version,
        "log_dir": tensorboard.log_dir,
        "test_loss": test_metrics["test/loss"],
        "test_acc": test_metrics["test/acc"],
        "best_val_acc": best.get("val/acc"),
        "best_epoch": best.get("epoch"),
        "history": rows,
        "params": parameter_report(model),
        "seconds_per_epoch": statistics.median(timer.train_seconds) if timer.train_seconds else None,
        "total_seconds": total_seconds,
        "device": device_description(trainer),
        "world_size": trainer.world_size,
        "rows": {
            "train": len(datamodule.arrays.train_labels),
            "val": len(datamodule.arrays.val_labels),
            "test": len(datamodule.arrays.test_labels),
        },
        "best_checkpoint": checkpoint.best_model_path,
        "augmentation": datamodule.augment.as_dict() if datamodule.augment else None,
        "pictures": [],
    }
    if trainer.is_global_zero:
        if config.pictures:
            results["pictures"] = write_run_pictures(config, datamodule, model, tensorboard)
        # Fill TensorBoard's HParams tab with the final numbers (not Lightning's -1 placeholder).
        tensorboard.log_hyperparams(
            {"lr": config.lr, "act": config.act, "epochs": config.epochs, "batch_size": config.batch_size,
             "seed": config.seed, "augment": config.augment},
            metrics={
                "hparams/test_acc": results["test_acc"],
                "hparams/test_loss": results["test_loss"],
                "hparams/best_val_acc": results["best_val_acc"] or 0.0,
            },
        )
        tensorboard.finalize("success")
        write_json(Path(tensorboard.log_dir) / "results.json", results)
    return results


def write_run_pictures(config: TrainConfig, datamodule, model, tensorboard) -> list[str]:
    """The end-of-training pictures in TensorBoard; the tags written."""
    arrays, augment = datamodule.arrays, None
    if datamodule.augment is not None:
        # The training grid shows the images as the network saw them: augmented, from the run's seed.
        augment = partial(BatchAugmenter(datamodule.augment), generator=torch.Generator().manual_seed(config.seed))
    return write_pictures(tensorboard.experiment, model, arrays.test_images, arrays.test_labels, arrays.train_images,
                          augment=augment, seed=config.seed)


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
