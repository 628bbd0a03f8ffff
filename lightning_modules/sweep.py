"""Learning rate x activation sweep of the MLP: one training run per setting, one summary."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from labkit.files import write_json, write_text
from labkit.progress import Interrupted, report
from lightning_modules.training import TrainConfig, train_mlp


def run_sweep(base: TrainConfig, lrs: list[float], acts: list[str], out_dir: str | Path) -> dict:
    """Train every (activation, learning rate) pair; write summary.md, summary.json, curves.png."""
    out_dir = Path(out_dir)
    runs = []
    settings = [(act, lr) for act in acts for lr in lrs]
    for number, (act, lr) in enumerate(settings, start=1):
        report(f"== setting {number}/{len(settings)}: act={act} lr={lr:g}")
        try:
            runs.append(train_mlp(dataclasses.replace(base, act=act, lr=lr)))
        except KeyboardInterrupt as exc:
            where = str(exc).split(";")[0] if isinstance(exc, Interrupted) else "while loading the data"
            kept = (f"the {len(runs)} finished run(s) are kept ({', '.join(run['run'] for run in runs)})"
                    if runs else "no run finished")
            raise Interrupted(f"at setting {number}/{len(settings)}, {where}; {kept}; no summary written") from None
    summary = summarize(runs)
    summary["config"] = {key: value for key, value in dataclasses.asdict(base).items() if key not in ("lr", "act", "echo")}
    plot_histories(runs, out_dir / "curves.png")
    write_text(out_dir / "summary.md", summary_markdown(summary))
    write_json(out_dir / "summary.json", summary)
    return summary


def summarize(runs: list[dict]) -> dict:
    """Per-setting test numbers, and the best learning rate of each activation.

    "Best" is chosen on validation only (the test set stays out of model selection): the highest
    validation accuracy, ties (several settings reach 1.0 here) broken by the lowest validation
    loss; the test numbers of that choice are reported beside it.
    """
    settings = [
        {
            "act": run["act"],
            "lr": run["lr"],
            "test_loss": run["test_loss"],
            "test_acc": run["test_acc"],
            "best_val_acc": run["best_val_acc"],
            "best_val_loss": min((row["val/loss"] for row in run["history"] if "val/loss" in row), default=None),
            "seconds_per_epoch": run["seconds_per_epoch"],
            "log_dir": run["log_dir"],
        }
        for run in runs
    ]
    best = {}
    for act in dict.fromkeys(row["act"] for row in settings):
        rows = [row for row in settings if row["act"] == act]
        winner = max(rows, key=_selection_key)
        best[act] = {"lr": winner["lr"], "best_val_acc": winner["best_val_acc"], "test_acc": winner["test_acc"], "test_loss": winner["test_loss"]}
    return {"settings": settings, "best_lr_per_activation": best, "histories": {f"{r['act']}_lr{r['lr']:g}": r["history"] for r in runs}}


def _selection_key(row: dict) -> tuple[float, float]:
    accuracy = row["best_val_acc"] if row["best_val_acc"] is not None else -1.0
    loss = row["best_val_loss"] if row["best_val_loss"] is not None else float("inf")
    return accuracy, -loss


def summary_markdown(summary: dict) -> str:
    lines = [
        "| activation | learning rate | test loss | test accuracy | best val accuracy | s/epoch |",
        "|---|---|---|---|---|---|",
    ]
    for row in summary["settings"]:
        val = "n/a" if row["best_val_acc"] is None else f"{row['best_val_acc']:.4f}"
        lines.append(
            f"| {row['act']} | {row['lr']:g} | {row['test_loss']:.4f} | {row['test_acc']:.4f} | {val} | {row['seconds_per_epoch']:.2f} |"
        )
    lines += ["", "Best learning rate per activation (chosen on validation accuracy, then validation loss):", ""]
    for act, best in summary["best_lr_per_activation"].items():
        lines.append(f"- {act}: lr {best['lr']:g} (validation {best['best_val_acc']:.4f}, test {best['test_acc']:.4f})")
    return "\n".join(lines) + "\n"


def plot_histories(runs: list[dict], path: Path) -> Path:
    """Loss and accuracy per epoch (training solid, validation dashed), one colour per setting."""
    from labkit.figures import plt, save

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(13, 4.8))
    colours = plt.get_cmap("tab10")
    for index, run in enumerate(runs):
        epochs = [row["epoch"] for row in run["history"]]
        label = f"{run['act']}, lr {run['lr']:g}"
        for stage, style in (("train", "-"), ("val", "--")):
            for ax, metric in ((ax_loss, "loss"), (ax_acc, "acc")):
                values = [row.get(f"{stage}/{metric}") for row in run["history"]]
                ax.plot(epochs, values, style, color=colours(index % 10), label=f"{label} ({stage})")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="Loss", yscale="log")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Accuracy", ylim=(0, 1.01))
    ax_acc.legend(fontsize=7, loc="lower right", ncol=1)
    fig.suptitle("MLP 200-50-25 on Sign-MNIST: solid = training, dashed = validation")
    fig.tight_layout()
    return save(fig, path)
