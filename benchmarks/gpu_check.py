"""The timings of ``benchmarks/gpu_check.sh`` on one CUDA device, printed as one table.

    python benchmarks/gpu_check.py                         # on a CUDA machine, real data
    python benchmarks/gpu_check.py --device cpu --quick    # the same code paths on the CPU

Rows: one training epoch of the MLP (``MLPClassifier``, and ``FusedMLPs`` with the sweep's 6
settings and with 6 x 5 seeds) through Lightning; the 6-setting sweep for a few epochs, one run
per setting (``run_sweep``) and fused (``train_fused``), with the fused members' test numbers
checked against the sequential runs; scikit-learn's Array API path on torch tensors of the device
for the unsupervised part's PCA (95% of the variance, exact solver as ``reduction.PCA``) and
Gaussian mixture (``reduction.GaussianMixture.fit_array_api``, k=25), each beside the
same step with NumPy on the CPU. With ``--full-sweeps``: the fused sweep's whole run
(``--full-epochs``, default 100) for the 6 settings and for 6 settings x 5 seeds, the issue's GPU
targets. With ``--study``, last: the whole study (``scripts/study.py --backend torch``, the
reference's settings; ``--quick``: its quick profile) into a fresh folder, timed, and each part's
steps with their seconds and places (the report's step table). A step that fails gives a row
saying why; the others still run.

    python benchmarks/gpu_check.py --only study --budget 540   # only the whole study, on the device
"""

from __future__ import annotations

import os

from reduction.backend import enable_scipy_array_api

enable_scipy_array_api()  # before SciPy's first import: scikit-learn's Array API dispatch needs it

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

LRS = [1e-3, 1e-5, 1e-9]
ACTS = ["relu", "linear"]

CHECKS = ["mlp", "sweeps", "reduction", "full-sweeps", "study"]  # groups of rows, in the order they run
OPTIONAL = {"full-sweeps": "full_sweeps", "study": "study"}  # groups that run only when their flag asks
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
rows: list[tuple[str, str, str, str]] = []
deadline = float("inf")  # perf_counter time after which remaining checks are skipped (--budget)


def row(check: str, where: str, seconds: float | None, detail: str) -> None:
    rows.append((check, where, "n/a" if seconds is None else f"{seconds:.3f}", detail))
    print(f"{check} on {where}: {rows[-1][2]} s ({detail})", flush=True)


def guarded(check: str, where: str):
    """Run a check; on failure record one row with the error instead of stopping."""

    def wrap(function):
        def run(*args, **kwargs):
            if time.perf_counter() > deadline:
                row(check, where, None, "skipped: time budget spent")
                return None
            try:
                return function(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - reported in the table
                traceback.print_exc()
                row(check, where, None, f"failed: {type(exc).__name__}: {' '.join(str(exc).split())[:120]}")
                return None

        return run

    return wrap


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return f"cuda ({torch.cuda.get_device_name(torch.device(device))})"
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


# --- the MLP -------------------------------------------------------------------------------------


def _epoch_seconds(model, datamodule, accelerator: str, epochs: int) -> list[float]:
    import lightning as L

    from lightning_modules import EpochTimer

    timer = EpochTimer()
    trainer = L.Trainer(
        max_epochs=epochs, accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
        enable_model_summary=False, enable_progress_bar=False, callbacks=[timer], limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=datamodule)
    return timer.train_seconds


def mlp_epochs(args, accelerator: str, where: str) -> None:
    from datamodules import SignMNISTDataModule
    from lightning_modules import MLPClassifier
    from lightning_modules.fused import BATCHES_PER_STEP, build_fused, member_specs

    datamodule = SignMNISTDataModule(args.data_dir, limit_rows=args.limit_rows)
    datamodule.prepare_data()
    datamodule.setup("fit")
    # The fused model as train_fused feeds it: several batches per Lightning step.
    grouped = SignMNISTDataModule(args.data_dir, limit_rows=args.limit_rows, batches_per_step=BATCHES_PER_STEP)
    grouped.setup("fit")
    steps = len(datamodule.train_dataloader())
    epochs = 3  # the first is a warm-up (allocator, kernels) and is not counted

    @guarded("MLP epoch, MLPClassifier", where)
    def solo():
        torch.manual_seed(22)
        seconds = _epoch_seconds(MLPClassifier().adapt(datamodule.train_images), datamodule, accelerator, epochs)[1:]
        row("MLP epoch, MLPClassifier", where, statistics.median(seconds), f"{steps} steps of 32, Lightning")
        return statistics.median(seconds)

    base = solo()
    for seeds in (1, 5):
        specs = member_specs(ACTS, LRS, range(22, 22 + seeds))
        name = f"MLP epoch, FusedMLPs x{len(specs)}"

        @guarded(name, where)
        def fused():
            model = build_fused(specs, grouped.train_images)
            seconds = statistics.median(_epoch_seconds(model, grouped, accelerator, epochs)[1:])
            per_member = f"; per member {seconds / len(specs) / base:.2f}x the single MLP" if base else ""
            graph = f"; {model.graph_steps} of {epochs * steps} steps replayed a CUDA graph" if accelerator == "cuda" else ""
            row(name, where, seconds, f"{len(specs)} members{per_member}{graph}")

        fused()


def sweeps(args, accelerator: str, where: str) -> None:
    from lightning_modules.fused import member_specs, train_fused
    from lightning_modules.sweep import run_sweep
    from lightning_modules.training import TrainConfig

    sequential = None
    if not args.no_sequential:

        @guarded(f"sweep 6 settings x {args.epochs} epochs, run_sweep", where)
        def run_sequential():
            with tempfile.TemporaryDirectory() as out:
                base = TrainConfig(epochs=args.epochs, data_dir=args.data_dir, logdir=f"{out}/runs", accelerator=accelerator,
                                   limit_rows=args.limit_rows, echo=False, pictures=False)
                started = time.perf_counter()
                summary = run_sweep(base, LRS, ACTS, f"{out}/sweep", sequential=True)
                wall = time.perf_counter() - started
            per_epoch = sum(s["seconds_per_epoch"] for s in summary["settings"])
            row(f"sweep 6 settings x {args.epochs} epochs, run_sweep", where, per_epoch, f"s/epoch (sum of settings); wall {wall:.1f} s")
            return summary

        sequential = run_sequential()

    @guarded(f"sweep 6 settings x {args.epochs} epochs, fused", where)
    def run_fused():
        run = train_fused(member_specs(ACTS, LRS), TrainConfig(data_dir=args.data_dir, epochs=args.epochs, limit_rows=args.limit_rows,
                                                              accelerator=accelerator))
        detail = f"s/epoch; wall {run['total_seconds']:.1f} s"
        if sequential is not None:
            solo = {(s["act"], s["lr"]): s for s in sequential["settings"]}
            d_acc = max(abs(m["test_acc"] - solo[(m["act"], m["lr"])]["test_acc"]) for m in run["members"])
            d_loss = max(abs(m["test_loss"] - solo[(m["act"], m["lr"])]["test_loss"]) / abs(solo[(m["act"], m["lr"])]["test_loss"])
                         for m in run["members"])
            per_epoch = sum(s["seconds_per_epoch"] for s in sequential["settings"])
            detail += (f"; {run['seconds_per_epoch'] / per_epoch:.2f}x run_sweep's epoch; vs run_sweep: max test-acc diff "
                       f"{d_acc:.4f}, max rel. test-loss diff {d_loss:.1e}")
        row(f"sweep 6 settings x {args.epochs} epochs, fused", where, run["seconds_per_epoch"], detail)

    run_fused()


def full_sweeps(args, accelerator: str, where: str) -> None:
    """The fused sweep's whole run, 6 settings and 6 x 5 seeds: training seconds (the epochs'
    training parts, validation excluded) and wall time (fit with validation, and test)."""
    from lightning_modules.fused import member_specs, train_fused
    from lightning_modules.training import TrainConfig

    for seeds in (1, 5):
        specs = member_specs(ACTS, LRS, range(22, 22 + seeds))
        name = f"fused sweep {len(specs)} members x {args.full_epochs} epochs"

        @guarded(name, where)
        def run():
            result = train_fused(specs, TrainConfig(data_dir=args.data_dir, epochs=args.full_epochs, limit_rows=args.limit_rows,
                                                    accelerator=accelerator))
            accuracies = [m["test_acc"] for m in result["members"]]
            row(name, where, sum(result["train_seconds"]),
                f"training seconds; median epoch {result['seconds_per_epoch']:.3f} s; wall {result['total_seconds']:.1f} s "
                f"with validation and test; test acc {min(accuracies):.3f}-{max(accuracies):.3f}; "
                f"{result['graph_steps']} of {result['optimizer_steps']} steps replayed a CUDA graph")

        run()


# --- scikit-learn's Array API path ---------------------------------------------------------------


def reduction_steps(args, device: str, where: str) -> None:
    import sklearn
    from sklearn.decomposition import PCA as SkPCA

    from datamodules import REDUCTION_VAL_FRACTION, load_splits, reference_sample
    from reduction import GaussianMixture

    from reduction.backend import array_api_problem

    problem = array_api_problem()
    if problem is not None:
        row("scikit-learn Array API", where, None, f"skipped: {problem}")
        return
    arrays = load_splits(args.data_dir, val_fraction=REDUCTION_VAL_FRACTION, seed=22, limit_rows=args.limit_rows)
    X = arrays.train_images.astype(np.float32)
    if args.reduction_rows:
        X = X[: args.reduction_rows]

    def pca(data):
        # reduction.PCA's exact solver; a fraction of the variance picks the component count.
        return SkPCA(n_components=0.95, svd_solver="full").fit(data)

    @guarded("PCA 95%, Array API", where)
    def pca_device():
        Xt = torch.as_tensor(X, device=device)
        with sklearn.config_context(array_api_dispatch=True):
            pca(Xt)  # warm-up: CUDA context, cuSOLVER handles
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            model = pca(Xt)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
        row("PCA 95%, Array API", where, seconds, f"{model.n_components_} components of {X.shape[1]}, {len(X)} rows, torch {device}")
        return model

    @guarded("PCA 95%, NumPy", "cpu")
    def pca_cpu():
        start = time.perf_counter()
        model = pca(X)
        row("PCA 95%, NumPy", "cpu", time.perf_counter() - start, f"{model.n_components_} components, {len(X)} rows")
        return model

    pca_device()
    cpu_model = pca_cpu()
    if cpu_model is None:
        return
    sample = X[reference_sample(len(X), min(10_000, len(X)), 22)]
    features = SkPCA(n_components=cpu_model.n_components_, svd_solver="full").fit_transform(sample)
    k = min(25, len(features) // 10)
    name = f"GaussianMixture k={k}, n_init {args.gmm_n_init}"

    def place(model) -> str:
        return getattr(model, "place_", getattr(model, "backend_", "?"))

    @guarded(f"{name}, Array API", where)
    def gmm_device():
        model = GaussianMixture(k, n_init=args.gmm_n_init, random_state=42).fit_array_api(features, device=device)
        row(f"{name}, Array API", where, model.fit_seconds_,
            f"ran on {place(model)} (starts on {model.init_place_}); lower bound {model.lower_bound_:.4f}, {len(features)} rows")
        return model

    @guarded(f"{name}, NumPy", "cpu")
    def gmm_cpu():
        model = GaussianMixture(k, n_init=args.gmm_n_init, random_state=42, backend="sklearn").fit(features)
        row(f"{name}, NumPy", "cpu", model.fit_seconds_, f"lower bound {model.lower_bound_:.4f}")
        return model

    gmm_device()
    gmm_cpu()


# --- the whole study ------------------------------------------------------------------------------


def whole_study(args, where: str) -> None:
    """``scripts/study.py --backend BACKEND`` into a fresh folder, timed; then every step of every
    part with its seconds and place, read from the parts' results.json (the report's step table)."""
    out = args.study_out or tempfile.mkdtemp(prefix="gpu-check-study-")
    if os.path.exists(out) and os.listdir(out):
        row("whole study", where, None, f"skipped: {out} is not empty (the study must start from nothing)")
        return
    command = [sys.executable, os.path.join(REPO_ROOT, "scripts", "study.py"), "--backend", args.study_backend, "--out", out]
    if args.quick:
        command.append("--quick")
    log = f"{os.path.abspath(out).rstrip(os.sep)}.log"  # beside the folder, which the study claims
    os.makedirs(os.path.dirname(log), exist_ok=True)
    left = deadline - time.perf_counter()
    if left < 10:
        row("whole study", where, None, "skipped: time budget spent")
        return
    print(f"[study] {' '.join(command[1:])} (at most {left:.0f} s; log: {log})", flush=True)
    started = time.perf_counter()
    with open(log, "w") as output:
        try:
            code = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, timeout=left).returncode
        except subprocess.TimeoutExpired:
            code = "timed out"
    seconds = time.perf_counter() - started
    parts = {}
    for name in ("mlp", "pca_forest", "embed", "cluster"):
        path = os.path.join(out, name, "results.json")
        if os.path.isfile(path):
            with open(path) as file:
                parts[name] = json.load(file)
    totals = ", ".join(f"{name} {part['steps']['total']['seconds']:.1f} s" for name, part in parts.items())
    if code != 0:
        with open(log) as file:
            print("".join(file.readlines()[-30:]), flush=True)
        row(f"whole study, --backend {args.study_backend}" + (" --quick" if args.quick else ""), where, None,
            f"failed: exit {code} after {seconds:.0f} s; finished parts: {totals or 'none'}; log {log}")
    else:
        row(f"whole study, --backend {args.study_backend}" + (" --quick" if args.quick else ""), where, seconds,
            f"wall, 4 parts: {totals}; results and report in {out}")
    for name, part in parts.items():
        backend = part.get("backend", {})
        device = f" on {backend['device']}" if backend.get("device") else ""
        study_steps.append((name, "(backend)", "", f"{backend.get('selected')}{device} (asked: {backend.get('requested')})"))
        for step, entry in part.get("steps", {}).items():
            study_steps.append((name, step, f"{entry['seconds']:.2f}", entry.get("place") or ""))


study_steps: list[tuple[str, str, str, str]] = []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="torch device to check (default cuda)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each sweep run (default 3)")
    parser.add_argument("--limit-rows", type=int, default=None, help="first N rows of each CSV only")
    parser.add_argument("--reduction-rows", type=int, default=None, help="first N training rows for PCA / mixture")
    parser.add_argument("--gmm-n-init", type=int, default=3, help="mixture starts (default 3; the study uses 10)")
    parser.add_argument("--no-sequential", action="store_true", help="skip the one-run-per-setting sweep")
    parser.add_argument("--full-sweeps", action="store_true", help="also the fused sweep's whole run, 6 and 30 members (minutes)")
    parser.add_argument("--full-epochs", type=int, default=100, help="epochs of --full-sweeps (default 100)")
    parser.add_argument("--study", action="store_true", help="also the whole study, last (minutes; --quick: its quick profile)")
    parser.add_argument("--study-backend", default="torch", help="--backend of the whole study (default torch)")
    parser.add_argument("--study-out", default=None, help="the study's output folder, new or empty (default: a fresh temporary one)")
    parser.add_argument("--only", nargs="+", choices=CHECKS, default=None, help="run only these groups of checks")
    parser.add_argument("--quick", action="store_true", help="small sizes: a check that the code paths run")
    parser.add_argument("--data-dir", default=None, help="Kaggle CSVs (default: the shipped data/)")
    parser.add_argument("--budget", type=float, default=180, help="seconds after which remaining checks are skipped (default 180)")
    parser.add_argument("--tests", default=None, help="the GPU tests' pytest summary line, for the table")
    parser.add_argument("--tests-seconds", type=float, default=None)
    args = parser.parse_args()
    if args.quick:
        args.limit_rows = args.limit_rows or 2000
        args.reduction_rows = args.reduction_rows or 2000
        args.epochs = min(args.epochs, 2)
        args.gmm_n_init = 1
        args.full_epochs = min(args.full_epochs, 2)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("skipped: no CUDA device")
        return
    warnings.filterwarnings("ignore")
    for name in ("lightning.pytorch", "lightning.pytorch.utilities.rank_zero", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    accelerator = "cuda" if args.device.startswith("cuda") else "cpu"
    where = device_name(args.device)
    print(f"torch {torch.__version__}, {where}", flush=True)
    if args.tests is not None:
        row("pytest -m gpu", where, args.tests_seconds, args.tests)
    global deadline
    started = time.perf_counter()
    deadline = started + args.budget
    checks = args.only or [check for check in CHECKS if check not in OPTIONAL or getattr(args, OPTIONAL[check])]
    if "mlp" in checks:
        mlp_epochs(args, accelerator, where)
    if "sweeps" in checks:
        sweeps(args, accelerator, where)
    if "reduction" in checks:
        reduction_steps(args, args.device, where)
    if "full-sweeps" in checks:
        full_sweeps(args, accelerator, where)
    if "study" in checks:
        guarded("whole study", where)(whole_study)(args, where)

    print(f"\n| check | ran on | seconds | detail |")
    print("|---|---|---|---|")
    for check, place, seconds, detail in rows:
        print(f"| {check} | {place} | {seconds} | {detail} |")
    if study_steps:
        print("\n| part | step | seconds | place |")
        print("|---|---|---|---|")
        for part, step, seconds, place in study_steps:
            print(f"| {part} | {step} | {seconds} | {place} |")
    print(f"\ntimings: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
