"""The scripts' command-line kit: argument types, shared flags, logging, the exit contract.

Every script ends in :func:`run_script` (tests call :func:`run_main`), which runs its ``main``
and turns every way a run can end into an exit code and, for all but success, one line on
stderr, never a traceback:

====  ========================================================================================
0     done
1     a fault during the run: a disk that filled up, another operating-system error (the line
      names the path and the reason; nothing half-written is left)
2     bad input: a bad flag or value, a missing or malformed CSV, settings that cannot work, an
      output location that cannot be used at all (a file in the way, no permission, read-only),
      an output folder in use by another run
130   stopped by Ctrl-C (SIGINT)
143   stopped by SIGTERM (``kill``, ``timeout``, Slurm, Kubernetes)
====  ========================================================================================

Ctrl-C and SIGTERM end the same way at any moment from the start of ``run_main`` on, the
heavy imports included: one line saying where the run stopped and what was kept. SIGTERM is
raised in the main thread as :class:`Terminated`, a ``KeyboardInterrupt``, so that every
clean-up written for Ctrl-C (the library's :func:`~labkit.progress.stage` blocks, the removal
of unfinished runs and parts) runs for it too.

Light on purpose: importing this module, or a script's top level, imports nothing heavier than
argparse (no NumPy, pandas, torch, Lightning or scikit-learn), so that ``--help``, a bad flag
and a bad value answer at once and a signal during the heavy imports inside ``main`` is
handled. Only ``scripts/`` uses this module: the library raises ordinary exceptions
(``DataError``, ``BackendError``, ``SettingsError``, ``OSError``) and reports progress through
``logging``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

from labkit.errors import SettingsError
from labkit.files import FolderInUse, FolderLock, UnusableOutput, write_json  # noqa: F401  (scripts take them from here)
from labkit.numbers import int_list  # noqa: F401  (scripts take it from here)
from labkit.progress import heartbeat, interruption_message  # noqa: F401

SUCCESS = 0
FAILED = 1  # a fault during the run (a full disk...)
USAGE_ERROR = 2
INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C
TERMINATED = 143  # 128 + SIGTERM

# The activation names of lightning_modules.mlp_module.ACTIVATIONS, here so that --act's choices
# need no torch (tests/test_signals_and_startup.py checks that the two agree).
ACTIVATION_CHOICES = ("elu", "gelu", "leaky_relu", "linear", "relu", "selu", "sigmoid", "silu", "tanh")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as Ctrl-C raises KeyboardInterrupt."""


class _StopSignal:
    """The first SIGINT/SIGTERM of this run (None: none yet) and when it came."""

    number: int | None = None
    at: float = 0.0
    raising = False  # inside run_main: a signal raises; after it: it is only noted


_stop = _StopSignal()
# A repeated signal within this many seconds of the first is ignored, so that the clean-up the
# first one started (removing an unfinished run folder, a half-computed part) can finish; one
# later (the clean-up is stuck, or something swallowed the first) raises again.
REPEAT_GRACE_SECONDS = 5.0


def _on_stop_signal(number: int, frame) -> None:
    first = _stop.number is None
    if first:
        _stop.number, _stop.at = number, time.monotonic()
    if not _stop.raising or (not first and time.monotonic() - _stop.at < REPEAT_GRACE_SECONDS):
        return
    raise Terminated() if number == signal.SIGTERM else KeyboardInterrupt()


@contextlib.contextmanager
def _stop_signals(restore: bool):
    """SIGINT and SIGTERM raise in the main thread within the block; with ``restore`` the
    previous handlers come back at its end, else later signals are only noted (the run is over)."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    _stop.number, _stop.raising = None, True
    for number in previous:
        signal.signal(number, _on_stop_signal)
    try:
        yield
    finally:
        _stop.raising = False
        if restore:
            for number, handler in previous.items():
                signal.signal(number, handler if handler is not None else signal.SIG_DFL)


def _input_errors() -> tuple[type[BaseException], ...]:
    """The exception types that mean bad input, exit code 2. The data and backend errors are
    looked up among the modules already imported (importing them here would cost seconds, and
    an error whose module was never imported cannot have been raised)."""
    found: list[type[BaseException]] = [UsageError, SettingsError, FolderInUse, UnusableOutput]
    for module, name in (("datamodules.csv_io", "DataError"), ("reduction.backend", "BackendError")):
        loaded = sys.modules.get(module)
        if loaded is not None:
            found.append(getattr(loaded, name))
    return tuple(found)


def run_script(main, kept_on_interrupt: str | None = None) -> None:
    """A script's entry point: ``sys.exit(run_main(main))``, without handing the signals back
    to Python's defaults before the exit (a late Ctrl-C would print a traceback)."""
    sys.exit(run_main(main, kept_on_interrupt=kept_on_interrupt, restore_signals=False))


def run_main(main, argv=None, kept_on_interrupt: str | None = None, restore_signals: bool = True) -> int:
    """Call ``main(argv)`` and return its exit code (see the module doc); every failure the user
    can fix or cause is one line on stderr.

    Ctrl-C and SIGTERM end with one line saying where the run stopped and what was kept (see
    ``labkit.progress.stage``; ``kept_on_interrupt`` is the script's default account); the
    account also follows the error line of a fault during the run (exit 1).
    """
    with _stop_signals(restore_signals):
        try:
            return _run(main, argv, kept_on_interrupt)
        except KeyboardInterrupt as exc:  # a signal while the outcome was being reported
            return _stopped(exc, kept_on_interrupt)


def _run(main, argv, kept_on_interrupt: str | None) -> int:
    configure_logging()
    configure_warnings()
    try:
        result = main(argv)
    except SystemExit as stop:
        if _stop.number is not None:  # Lightning's own exit on a signal
            return _stopped(None, kept_on_interrupt)
        # argparse: --help (0) or a bad flag (2), its message already printed
        return stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    except KeyboardInterrupt as exc:
        return _stopped(exc, kept_on_interrupt)
    except _input_errors() as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return USAGE_ERROR
    except OSError as exc:
        account = f"; {kept_on_interrupt}" if kept_on_interrupt else ""
        print(f"error: {os_error_text(exc)}{account}", file=sys.stderr, flush=True)
        return FAILED
    except BaseException:
        if _stop.number is not None:  # something failed while stopping: the signal is the story
            return _stopped(None, kept_on_interrupt)
        raise
    if _stop.number is not None:  # the signal was swallowed on the way; a stopped run never exits 0
        return _stopped(None, kept_on_interrupt)
    return SUCCESS if result is None else int(result)


def _stopped(exc: KeyboardInterrupt | None, kept_default: str | None) -> int:
    """Print the one line for a run stopped by a signal; its exit code."""
    text = interruption_message(exc if exc is not None else KeyboardInterrupt(), kept_default)
    if _stop.number == signal.SIGTERM or isinstance(exc, Terminated):
        print("terminated (SIGTERM)" + text.removeprefix("interrupted"), file=sys.stderr, flush=True)
        return TERMINATED
    print(text, file=sys.stderr, flush=True)
    return INTERRUPTED


def os_error_text(exc: OSError) -> str:
    """``PATH: reason`` (``PATH -> OTHER: reason`` for a move), or the error's own text."""
    if isinstance(exc, UnusableOutput):
        return str(exc)
    reason = exc.strerror or str(exc)
    if exc.filename is None:
        return reason
    path = str(exc.filename) + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
    return f"{path}: {reason}"


class UsageError(ValueError):
    """An impossible combination of options, found after argument parsing."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad flag is reported in one line (no usage block) with exit code 2, and a
    negative number in any notation reaches the flag it follows.

    argparse recognises negative numbers only as ``-1`` or ``-1.5``: it takes ``-1e-3`` (or
    ``-inf``) for an unknown option and reports ``--lr: expected one argument`` instead of what
    is wrong with the value. Before parsing, such a number after a flag that takes one value is
    attached to it as ``--lr=-1e-3`` (argparse's documented form for a value that starts with
    ``-``); in a flag's list of values it is checked with the flag's type, whose message is then
    the error.
    """

    def __init__(self, *args, **kwargs) -> None:
        self.flags: dict[str, argparse.Action] = {}  # every option string and its action
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self.flags.update(dict.fromkeys(action.option_strings, action))
        return action

    def parse_known_args(self, args=None, namespace=None):
        arguments = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(self._negative_values_attached(arguments), namespace)

    def _negative_values_attached(self, arguments: list[str]) -> list[str]:
        out: list[str] = []
        action = None  # the flag whose values come next
        for position, argument in enumerate(arguments):
            if argument == "--":  # everything after it is a value already
                return out + arguments[position:]
            number = _is_negative_number(argument) and argument not in self.flags
            if argument.startswith("-") and not number:
                action = self._flag_taking_values(argument)
                taken = 0
            elif action is not None:
                single = action.nargs in (None, "?")
                if number and single:
                    out[-1] = f"{out[-1]}={argument}"
                    action = None
                    continue
                if number:
                    self._reject_if_invalid(action, argument)
                taken += 1
                if single or taken == action.nargs:
                    action = None
            out.append(argument)
        return out

    def _flag_taking_values(self, argument: str) -> argparse.Action | None:
        """The action of ``argument`` (a flag, or an unambiguous abbreviation of a long one) if it
        takes values after it; None for other flags, unknown ones and ``--flag=value``."""
        action = self.flags.get(argument)
        if action is None and "=" not in argument and self.allow_abbrev and argument.startswith("--"):
            matches = {action for flag, action in self.flags.items() if flag.startswith(argument)}
            action = matches.pop() if len(matches) == 1 else None
        return action if action is not None and action.nargs != 0 else None

    def _reject_if_invalid(self, action: argparse.Action, text: str) -> None:
        """Report ``text`` as ``action``'s type would, if it rejects it (as argparse words it)."""
        if action.type is None:
            return
        try:
            action.type(text)
        except argparse.ArgumentTypeError as exc:
            self.error(f"argument {'/'.join(action.option_strings)}: {exc}")
        except (TypeError, ValueError):
            name = getattr(action.type, "__name__", repr(action.type))
            self.error(f"argument {'/'.join(action.option_strings)}: invalid {name} value: {text!r}")

    def error(self, message: str):
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message}\n")


def _is_negative_number(text: str) -> bool:
    """``-1``, ``-1e-3``, ``-.5``, ``-inf``: a minus sign and what ``float`` reads as a number."""
    if not text.startswith("-"):
        return False
    try:
        float(text)
    except ValueError:
        return False
    return True


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
        help="where the algorithms run: cuml (RAPIDS cuML on an NVIDIA GPU), torch (t-SNE, MDS, PCA and the "
        "Gaussian mixture on torch's CUDA device, or on the CPU where there is none), sklearn (CPU), or auto: "
        "cuML when it imports and a CUDA device is present, else torch when torch can use a CUDA device, else "
        "sklearn (default auto). What a backend lacks runs elsewhere as reduction/backend.py says, with a note",
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


# Warnings that do not apply to these scripts' runs, filtered once here at the entry point (the
# library leaves Lightning's warnings as Lightning gives them).
INAPPLICABLE_WARNINGS = (
    ".*smaller than the logging interval.*",  # metrics are logged once per epoch, not per step
    ".*treespec, LeafSpec.*",  # a deprecation of torch's raised inside Lightning's own code
)


def configure_warnings() -> None:
    """Ignore the :data:`INAPPLICABLE_WARNINGS` for the rest of the process."""
    for message in INAPPLICABLE_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


NVML_CHECK_VARIABLE = "PYTORCH_NVML_BASED_CUDA_CHECK"


def prefer_cuda_runtime_check(strategy: str = "auto") -> None:
    """Let ``torch.cuda.is_available()`` ask the CUDA runtime again, as it does without Lightning.

    Importing Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 for the whole process, so that
    asking whether CUDA is there initialises nothing a forked process could inherit. With it, a
    CUDA build of torch asks NVML on every call until CUDA is initialised, and
    ``torch.optim.Adam.step`` asks on every step, a share of the solo MLP's step on a CPU
    (``benchmarks/bench_mlp.py``). The MLP scripts start other processes fresh (DDP's launcher
    runs the script again), so they call this after importing Lightning and before training;
    with a strategy that forks (``ddp_fork``, ``ddp_notebook``) the variable stays. A library
    user keeps Lightning's setting.
    """
    if "fork" not in strategy and "notebook" not in strategy:
        os.environ.pop(NVML_CHECK_VARIABLE, None)


# Where Lightning's rank-zero info lines ("GPU available", tips, its Ctrl-C message), its device
# lines and its "Received SIGTERM" line are logged (run_main says what a signal stopped).
LIGHTNING_INFO_LOGGERS = (
    "lightning.pytorch.trainer.connectors.signal_connector",
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning_utilities.core.rank_zero",
    "lightning.pytorch.accelerators.cuda",
    "lightning.fabric.utilities.distributed",
    "lightning.pytorch.utilities.distributed",
)


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
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value >= 0):  # before importing torch: most mistakes answer at once
        raise ValueError(f"strength must be a finite number >= 0, got {text}")
    from datamodules.augment import AugmentConfig

    AugmentConfig(strength=value)  # raises ValueError with the reason (a range reaching 100%)
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
