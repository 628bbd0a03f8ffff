"""Learning rate x activation (x seed) sweep of the MLP, and its summary.

Two ways to train the settings, with the same outputs (one TensorBoard run folder and one
``results.json`` per setting, as ``train_mlp`` writes them, then ``summary.md``,
``summary.json`` and ``curves.png``):

* fused (the default): all settings are the members of one :class:`~lightning_modules.fused.FusedMLPs`
  and train in one Lightning loop on the same batches; each member trains exactly as it would
  alone (``tests/test_fused.py``), but every step serves all of them;
* sequential: one ``train_mlp`` run per setting, one after another (for comparison, and for
  settings too many to fit in memory together).

With several seeds, a setting's numbers are summarised as mean and standard deviation over them.
"""

from __future__ import annotations

import dataclasses
import shutil
import statistics
from pathlib import Path

from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from labkit.files import write_json, write_text
from labkit.numbers import with_spread
from labkit.progress import Interrupted, report
from lightning_modules.callbacks import MetricsOnlyLogger
from lightning_modules.fused import MemberSpec, member_specs
from lightning_modules.training import RunResults, TrainConfig, claim_run_folder, run_name, train_mlp


def setting_names(base: TrainConfig, specs: list[MemberSpec]) -> list[str]:
    """Each setting's run folder name: ``train_mlp``'s, plus ``_seed<s>`` when seeds vary."""
    several_seeds = len({spec.seed for spec in specs}) > 1
    return [run_name(spec.act, spec.lr, base.augment, spec.seed if several_seeds else None) for spec in specs]


def run_sweep(
    base: TrainConfig,
    lrs: list[float],
    acts: list[str],
    out_dir: str | Path,
    seeds: list[int] | None = None,
    sequential: bool = False,
) -> dict:
    """Train every (activation, learning rate, seed); write summary.md, summary.json, curves.png.

    ``seeds`` default to ``[base.seed]``. Fused, ``base.seed`` sets the split and the batch
    order shared by all members and each member's seed its initial weights; sequential, a
    setting's seed sets both, as in ``train_mlp``.
    """
    out_dir = Path(out_dir)
    specs = member_specs(acts, lrs, seeds or [base.seed])
    names = setting_names(base, specs)
    runs = _train_sequentially(base, specs, names) if sequential else _train_fused(base, specs, names)
    summary = summarize(runs)
    summary["config"] = {
        **{key: value for key, value in dataclasses.asdict(base).items() if key not in ("lr", "act", "echo", "name")},
        "seeds": sorted({spec.seed for spec in specs}),
        "way": "sequential" if sequential else "fused",
    }
    plot_histories(runs, out_dir / "curves.png")
    write_text(out_dir / "summary.md", summary_markdown(summary))
    write_json(out_dir / "summary.json", summary)
    return summary


def _train_sequentially(base: TrainConfig, specs: list[MemberSpec], names: list[str]) -> list[dict]:
    runs = []
    for number, (spec, name) in enumerate(zip(specs, names), start=1):
        report(f"== setting {number}/{len(specs)}: {name}")
        try:
            runs.append(train_mlp(dataclasses.replace(base, act=spec.act, lr=spec.lr, seed=spec.seed, name=name)))
        except KeyboardInterrupt as exc:
            where = str(exc).split(";")[0] if isinstance(exc, Interrupted) else "while loading the data"
            kept = (f"the {len(runs)} finished run(s) are kept ({', '.join(run['run'] for run in runs)})"
                    if runs else "no run finished")
            raise Interrupted(f"at setting {number}/{len(specs)}, {where}; {kept}; no summary written") from None
    return runs


def _train_fused(base: TrainConfig, specs: list[MemberSpec], names: list[str]) -> list[dict]:
    from lightning_modules.fused import train_fused

    root = Path(base.logdir) / "mlp"
    boards: list[TensorBoardLogger] = []
    run = None
    # Members of one learning rate side by side in the fused model: its optimizer then makes one
    # Adam kernel call per learning rate (see MemberAdam). Results come back in the sweep's order.
    order = sorted(range(len(specs)), key=lambda i: specs[i].lr)
    position = {spec_index: fused_index for fused_index, spec_index in enumerate(order)}
    try:
        for name in names:
            boards.append(TensorBoardLogger(base.logdir, name="mlp", version=claim_run_folder(root, name), default_hp_metric=False))
        members = MemberLoggers({spec.name: board for spec, board in zip(specs, boards)}, base.epochs, echo=base.echo)
        report(f"fused sweep: {len(specs)} settings trained together ({', '.join(names)})")
        run = train_fused([specs[i] for i in order], base, logger=[members])
        report(f"fused sweep: {run['seconds_per_epoch']:.2f} s per epoch for all {len(specs)} settings on {run['device']}")
        return [_member_results(base, run, position[index], spec, board) for index, (spec, board) in enumerate(zip(specs, boards))]
    except BaseException as exc:
        for board in boards:  # runs without results.json are no runs (as in train_mlp), whatever stopped them
            shutil.rmtree(board.log_dir, ignore_errors=True)
        if isinstance(exc, KeyboardInterrupt):
            where = str(exc) if isinstance(exc, Interrupted) else "while loading the data" if run is None else "while writing the results"
            raise Interrupted(f"{where} of the fused sweep ({len(specs)} settings); nothing written for these runs") from None
        raise


def _member_results(base: TrainConfig, run: dict, index: int, spec: MemberSpec, board: TensorBoardLogger) -> dict:
    """One member's results (:class:`~lightning_modules.training.RunResults`), written into its
    run folder; ``index``: its place in the fused model."""
    member = run["members"][index]
    config = dataclasses.replace(base, act=spec.act, lr=spec.lr, seed=spec.seed, name=board.version)
    fused = {"members": len(run["members"]), "member": index, "init_seed": spec.seed, "data_seed": base.seed}
    return RunResults(config, board.version, board.log_dir, run["model"].member_classifier(index), run["datamodule"], run["fit"],
                      member["history"], member["test_loss"], member["test_acc"], fused=fused).write(board)


class MemberLoggers(MetricsOnlyLogger):
    """Hands each fused member's metrics (``<member>/<stage>/<metric>``) to that member's own
    TensorBoard run as ``<stage>/<metric>``, at the same steps ``train_mlp`` logs them, so that
    fused and sequential runs overlay in TensorBoard; reports one line per epoch. Each member's
    HParams are written with its final numbers, once its results are."""

    name = "members"

    def __init__(self, boards: dict[str, TensorBoardLogger], total_epochs: int, echo: bool = True) -> None:
        super().__init__()
        self.boards, self.total_epochs, self.echo = boards, total_epochs, echo
        self._epoch: dict[str, dict[str, float]] = {}  # this epoch's numbers so far, per member

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        per_member: dict[str, dict[str, float]] = {}
        for key, value in metrics.items():
            member, _, metric = key.partition("/")
            if member in self.boards and metric:
                per_member.setdefault(member, {})[metric] = float(value)
        for member, values in per_member.items():
            self.boards[member].log_metrics({**values, **({"epoch": float(metrics["epoch"])} if "epoch" in metrics else {})}, step)
            self._epoch.setdefault(member, {}).update(values)
        # Validation is logged before training within an epoch, so train/acc completes it.
        if "epoch" in metrics and any(key.endswith("/train/acc") for key in metrics):
            if self.echo:
                report(self._epoch_line(int(metrics["epoch"]) + 1, self._epoch))
            self._epoch = {}

    def _epoch_line(self, epoch: int, per_member: dict[str, dict[str, float]]) -> str:
        parts = [f"epoch {epoch}/{self.total_epochs}"]
        for metric in ("train/loss", "val/acc"):
            values = {member: row[metric] for member, row in per_member.items() if metric in row}
            if values:
                best = max(values, key=values.get) if metric.endswith("acc") else min(values, key=values.get)
                parts.append(f"{metric} median {statistics.median(values.values()):.4f}, "
                             f"best {values[best]:.4f} ({self.boards[best].version})")
        return "  ".join(parts)


def summarize(runs: list[dict]) -> dict:
    """Per-run test numbers, per-setting means over seeds, and the best learning rate of each activation.

    "Best" is chosen on validation only (the test set stays out of model selection): the highest
    (mean) validation accuracy, ties (several settings reach 1.0 here) broken by the lowest
    (mean) validation loss; the test numbers of that choice are reported beside it.
    """
    per_run = [
        {
            "act": run["act"],
            "lr": run["lr"],
            "seed": run["seed"],
            "run": run["run"],
            "test_loss": run["test_loss"],
            "test_acc": run["test_acc"],
            "best_val_acc": run["best_val_acc"],
            "best_val_loss": min((row["val/loss"] for row in run["history"] if "val/loss" in row), default=None),
            "seconds_per_epoch": run["seconds_per_epoch"],
            "device": run["device"],
            "log_dir": run["log_dir"],
        }
        for run in runs
    ]
    settings = []
    for act, lr in dict.fromkeys((row["act"], row["lr"]) for row in per_run):
        rows = [row for row in per_run if (row["act"], row["lr"]) == (act, lr)]
        setting = {"act": act, "lr": lr, "seeds": [row["seed"] for row in rows], "runs": [row["run"] for row in rows]}
        for key in ("test_loss", "test_acc", "best_val_acc", "best_val_loss", "seconds_per_epoch"):
            values = [row[key] for row in rows if row[key] is not None]
            setting[key] = statistics.fmean(values) if values else None
            setting[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else None
        setting["log_dir"] = rows[0]["log_dir"]
        settings.append(setting)
    best = {}
    for act in dict.fromkeys(row["act"] for row in settings):
        winner = max((row for row in settings if row["act"] == act), key=_selection_key)
        best[act] = {key: winner[key] for key in ("lr", "best_val_acc", "test_acc", "test_loss")}
    return {
        "settings": settings,
        "runs": per_run,
        "best_lr_per_activation": best,
        "histories": {run["run"]: run["history"] for run in runs},  # keyed by the run folder's name
    }


def _selection_key(row: dict) -> tuple[float, float]:
    accuracy = row["best_val_acc"] if row["best_val_acc"] is not None else -1.0
    loss = row["best_val_loss"] if row["best_val_loss"] is not None else float("inf")
    return accuracy, -loss


def summary_markdown(summary: dict) -> str:
    several = any(len(row["seeds"]) > 1 for row in summary["settings"])
    over = f" (mean ± sd over {max(len(row['seeds']) for row in summary['settings'])} seeds)" if several else ""
    lines = [
        f"| activation | learning rate | test loss{over} | test accuracy{over} | best val accuracy | s/epoch |",
        "|---|---|---|---|---|---|",
    ]
    for row in summary["settings"]:
        seconds = "n/a" if row["seconds_per_epoch"] is None else f"{row['seconds_per_epoch']:.2f}"
        spread = {key: with_spread(row[key], row.get(f"{key}_std")) for key in ("test_loss", "test_acc", "best_val_acc")}
        lines.append(f"| {row['act']} | {row['lr']:g} | {spread['test_loss']} | {spread['test_acc']} | {spread['best_val_acc']} | {seconds} |")
    config = summary.get("config", {})
    if config.get("way") == "fused":
        lines += ["", f"Trained fused: all {len(summary['runs'])} runs in one loop; s/epoch is one epoch of all of them."]
    if config.get("augment"):
        lines += ["", f"Training images augmented (strength {config['augment']:g}); validation and test images as they are."]
    lines += ["", "Best learning rate per activation (chosen on validation accuracy, then validation loss):", ""]
    for act, best in summary["best_lr_per_activation"].items():
        lines.append(f"- {act}: lr {best['lr']:g} (validation {best['best_val_acc']:.4f}, test {best['test_acc']:.4f})")
    return "\n".join(lines) + "\n"


def plot_histories(runs: list[dict], path: Path) -> Path:
    """Loss and accuracy per epoch (training solid, validation dashed), one colour per setting.

    With several seeds per setting, the line is the mean over them and the band its min-max range.
    """
    import numpy as np

    from labkit.figures import plt, save

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(13, 4.8))
    colours = plt.get_cmap("tab10")
    groups: dict[tuple[str, float], list[dict]] = {}
    for run in runs:
        groups.setdefault((run["act"], run["lr"]), []).append(run)
    for index, ((act, lr), members) in enumerate(groups.items()):
        epochs = min(len(run["history"]) for run in members)
        x = [row["epoch"] for row in members[0]["history"][:epochs]]
        seeds = f", {len(members)} seeds" if len(members) > 1 else ""
        for stage, style in (("train", "-"), ("val", "--")):
            for ax, metric in ((ax_loss, "loss"), (ax_acc, "acc")):
                values = np.array([[row.get(f"{stage}/{metric}", np.nan) for row in run["history"][:epochs]]
                                   for run in members], dtype=float)
                colour = colours(index % 10)
                ax.plot(x, np.nanmean(values, axis=0), style, color=colour, label=f"{act}, lr {lr:g}{seeds} ({stage})")
                if len(members) > 1:
                    ax.fill_between(x, np.nanmin(values, axis=0), np.nanmax(values, axis=0), color=colour, alpha=0.15, linewidth=0)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="Loss", yscale="log")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Accuracy", ylim=(0, 1.01))
    ax_acc.legend(fontsize=7, loc="lower right", ncol=1)
    fig.suptitle("MLP 200-50-25 on Sign-MNIST: solid = training, dashed = validation"
                 + ("; bands: range over seeds" if any(len(m) > 1 for m in groups.values()) else ""))
    fig.tight_layout()
    return save(fig, path)
