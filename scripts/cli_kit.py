"""The scripts' command-line kit: argument types, shared flags, logging, the error contract.

Every script's ``main`` is wrapped by :func:`run_main`, so that bad input (a missing file, a
malformed CSV, an impossible flag value) ends in one line on stderr and exit code 2 instead of
a traceback, and Ctrl-C in one line and exit code 130. Only ``scripts/`` uses this module: the
library raises ordinary exceptions (``DataError``, ``BackendError``, ``SettingsError``) and
reports progress through ``logging``.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import sys
from pathlib import Path

from datamodules.csv_io import DataError
from labkit.errors import SettingsError
from labkit.files import write_json  # noqa: F401  (the scripts take it from here)

USAGE_ERROR = 2
INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C


class UsageError(ValueError):
    """An impossible combination of options, found after argument parsing."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad flag is reported in one line (no usage block) with exit code 2."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # argparse takes "-1e-3" for an option, not a (negative) value, and then reports
        # "expected one argument"; accepting scientific notation gives the real message.
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")

    def error(self, message: str):
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message}\n")


def add_data_arguments(parser: argparse.ArgumentParser, seed_default: int = 22) -> None:
    """--data-dir and --seed, the same in every script."""
    parser.add_argument(
        "--data-dir",
        type=existing_path,
        default=None,
        help="folder, zip or CSV with sign_mnist_train.csv / sign_mnist_test.csv "
        "(.csv or .csv.gz; default: the copy shipped in data/)",
    )
    parser.add_argument(
        "--seed", type=int, default=seed_default, help=f"random seed (default {seed_default}, the reference's)"
    )


def add_study_arguments(parser: argparse.ArgumentParser, name: str, quick_help: str) -> None:
    """The flags every script of the unsupervised part shares: data, seed, --out, --backend, --quick."""
    from reduction.backend import BACKEND_CHOICES

    add_data_arguments(parser)
    parser.add_argument("--out", type=Path, default=Path("runs") / name, help=f"output folder (default runs/{name})")
    parser.add_argument(
        "--backend",
        choices=BACKEND_CHOICES,
        default="auto",
        help="where the algorithms run: cuml (RAPIDS cuML on an NVIDIA GPU), sklearn (CPU), or auto: "
        "cuML when it imports and a CUDA device is present (default auto). Algorithms cuML lacks "
        "fall back as reduction/backend.py says, with a note",
    )
    parser.add_argument("--quick", action="store_true", help=quick_help)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def int_list(text: str, what: str = "list") -> list[int]:
    """``START:STOP:STEP`` (STOP included when on the step) or a comma list ``5,10,20``.

    Raises ValueError with a one-line message on a malformed or empty list.
    """
    text = text.strip()
    form = f"expected START:STOP:STEP or a comma list of integers, got {text!r}"
    try:
        parts = [int(part) for part in text.split(":" if ":" in text else ",") if part.strip()]
    except ValueError:
        raise ValueError(form) from None
    if ":" in text:
        if len(parts) != 3:
            raise ValueError(form)
        start, stop, step = parts
        if step < 1:
            raise ValueError(f"the step must be positive in {text!r}")
        parts = list(range(start, stop + 1, step))
    if not parts:
        raise ValueError(f"the {what} {text!r} is empty")
    return parts


def parsed_by(parse):
    """An argparse ``type`` from a parser that raises ValueError: its message becomes the flag's error."""

    def argument_type(text: str):
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    argument_type.__name__ = parse.__name__
    return argument_type


def existing_path(text: str) -> Path:
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file or directory")
    return path


class _StderrHandler(logging.Handler):
    """Writes each record to whatever ``sys.stderr`` is at that moment (tests swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(self.format(record), file=sys.stderr, flush=True)
        except Exception:
            self.handleError(record)


def configure_logging(level: int = logging.INFO) -> None:
    """Show the library's progress lines (logger ``sign_mnist_lab``) on stderr, Lightning's warnings only.

    Lightning's info lines ("GPU available: False", "TPU available: ...", product tips, its own
    Ctrl-C message) are noise in these scripts: the training code reports the device it uses.
    """
    from labkit.progress import logger

    if not any(isinstance(handler, _StderrHandler) for handler in logger.handlers):
        logger.addHandler(_StderrHandler())
        logger.propagate = False
    logger.setLevel(level)
    # Lightning puts "lightning.pytorch" back to INFO when it is first imported, which may come
    # later (the scripts import it lazily); the loggers its info lines come from are below that
    # one, and a level set on them stays.
    for name in LIGHTNING_INFO_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


# Where Lightning's rank-zero info lines ("GPU available", tips, its Ctrl-C message) and its
# device lines are logged.
LIGHTNING_INFO_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning_utilities.core.rank_zero",
    "lightning.pytorch.accelerators.cuda",
    "lightning.fabric.utilities.distributed",
    "lightning.pytorch.utilities.distributed",
)


def run_main(main, argv=None, kept_on_interrupt: str | None = None) -> int:
    """Call ``main(argv)``; turn expected failures into a one-line error and exit code 2.

    Ctrl-C ends with one line on stderr saying where it stopped and what was kept (see
    ``labkit.progress.stage``; ``kept_on_interrupt`` is the script's default account), exit 130.
    """
    # Errors the user can fix by changing the input; anything else is a bug and keeps its traceback.
    from labkit.progress import interruption_message
    from reduction.backend import BackendError

    configure_logging()
    try:
        result = main(argv)
    except SystemExit as stop:  # argparse: --help (0) or a bad flag (2), its message already printed
        return stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    except (DataError, UsageError, SettingsError, BackendError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt as exc:
        print(interruption_message(exc, kept_on_interrupt), file=sys.stderr, flush=True)
        return INTERRUPTED
    return 0 if result is None else int(result)


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags train_mlp.py and sweep_mlp.py share; :func:`training_config` reads them back."""
    parser.add_argument("--epochs", type=positive_int, default=100, help="training epochs (default 100)")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="batch size (default 32)")
    add_data_arguments(parser)
    parser.add_argument("--logdir", default="runs", help="root folder of TensorBoard runs (default runs)")
    parser.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "gpu", "cuda", "mps"], help="Lightning accelerator (default auto)")
    parser.add_argument("--limit-rows", type=positive_int, default=None, help="use only the first N rows of each CSV (quick trials)")
    parser.add_argument(
        "--augment", type=parsed_by(augment_strength), nargs="?", const=1.0, default=0.0, metavar="STRENGTH",
        help="augment the training images: each gets its own random rotation (about 11 degrees), shift "
        "(15%%), zoom (10%%) and brightness/contrast change (20%%) every epoch, ranges times STRENGTH "
        "(--augment alone: 1; default: none, as the reference). Validation and test images are never altered",
    )
    parser.add_argument("--no-pictures", action="store_true",
                        help="skip the end-of-training TensorBoard pictures (confusion matrix, mistakes, projector)")
    parser.add_argument("--histograms", action="store_true", help="weight and gradient histograms in TensorBoard every epoch")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines")


def augment_strength(text: str) -> float:
    """A finite strength >= 0 that keeps every range below 100% (ValueError otherwise)."""
    from datamodules.augment import AugmentConfig

    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    AugmentConfig(strength=value)  # raises ValueError with the reason
    return value


def training_config(args, **fields):
    """The ``TrainConfig`` the flags of :func:`add_training_arguments` describe."""
    from lightning_modules.training import TrainConfig

    return TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        data_dir=str(args.data_dir) if args.data_dir else None,
        logdir=args.logdir,
        accelerator=args.accelerator,
        limit_rows=args.limit_rows,
        echo=not args.quiet,
        augment=args.augment,
        pictures=not args.no_pictures,
        histograms=args.histograms,
        **fields,
    )
