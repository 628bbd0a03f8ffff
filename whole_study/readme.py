"""README's "What a full run finds" block, rendered from a study's results (issue 10, item 5).

``python scripts/study.py --readme-results`` prints it from ``runs/study``. README's numbers are
to be replaced by this block once the full runs are done; a block from a quick or custom run
says so in its first line, so that it is not mistaken for README's.
"""

from __future__ import annotations

from pathlib import Path

from labkit.errors import SettingsError
from whole_study.parts import PART_NAMES, elapsed_text
from whole_study.runner import read_results


def readme_block(out_dir: str | Path) -> str:
    """The block's markdown, from ``OUT/<part>/results.json`` of every part present.

    SettingsError when no part has results there.
    """
    out_dir = Path(out_dir)
    results = {name: part for name in PART_NAMES if (part := read_results(out_dir / name)) is not None}
    if not results:
        raise SettingsError(f"{out_dir}: no study results (run python scripts/study.py --out {out_dir} first)")
    lines = []
    profiles = {name: part.get("study_part", {}).get("conditions", {}) for name, part in results.items()}
    partial = [f"{name} ({c.get('profile')}" + (f", first {c['limit_rows']} rows" if c.get("limit_rows") else "") + ")"
               for name, c in profiles.items() if not (c.get("full_profile") and c.get("all_rows") and c.get("kaggle_data"))]
    if partial:
        lines += [f"(Not README's numbers: not full runs on the Kaggle data: {', '.join(partial)}.)", ""]
    devices = sorted({str(part.get("backend", {}).get("selected")) for part in results.values()})
    lines += [f"Measured with `python scripts/study.py` on {', '.join(devices)} (numbers from each part's "
              f"`results.json` in `{out_dir}`; every step's time in `{out_dir}/report.md`):", ""]
    for name in PART_NAMES:
        if name in results:
            lines.append(BULLETS[name](results[name]))
    total = sum(part.get("study_part", {}).get("seconds", 0) for part in results.values())
    lines += ["", f"The whole study took {elapsed_text(total)} of computing on that machine."]
    return "\n".join(lines) + "\n"


def _mlp(part: dict) -> str:
    profile, timing = part["profile"], part["timing"]
    settings = {(row["act"], row["lr"]): row for row in part["settings"]}
    best = "; ".join(f"{act} at lr {row['lr']:g} (test accuracy {row['test_acc']:.3f})"
                     for act, row in part["best_lr_per_activation"].items())
    text = (f"- MLP sweep ({profile['epochs']} epochs, {len(part['settings'])} settings fused): best on validation: {best}")
    linear = settings.get(("linear", 1e-05))
    if linear is not None:
        text += (f"; linear at lr 1e-5: test accuracy {linear['test_acc']:.3f}, best validation accuracy "
                 f"{linear['best_val_acc']:.4f}")
    return text + f"; {timing['seconds_per_epoch_fused']:.2f} s per epoch for all settings together."


def _pca_forest(part: dict) -> str:
    raw, pca, fit = part["test"]["raw"], part["test"]["pca"], part["fit_time"]
    return (f"- `pca_forest`: {part['n_components_95']} components keep 95% of the variance; the best forest on pixels "
            f"({raw['n_estimators']} trees, depth {raw['max_depth']}) reaches {raw['test_accuracy']:.3f} test accuracy, "
            f"on PCA features ({pca['n_estimators']} trees, depth {pca['max_depth']}) {pca['test_accuracy']:.3f}; at the "
            f"same settings the PCA forest trains in {fit['fit_time_ratio']:.2f}x the time.")


def _embed(part: dict) -> str:
    methods = sorted(part["methods"].items(), key=lambda item: -(item[1]["knn_accuracy"] or 0))
    (first, top), rest = methods[0], methods[1:]
    n = top["knn_neighbors"]
    others = ", ".join(f"{name} ({r['knn_accuracy']:.3f}" + (f", on {r['rows']:,} rows" if r["rows"] != top["rows"] else "") + ")"
                       for name, r in rest)
    return (f"- `embed`: {first} separates the letters best ({n}-NN accuracy in 2-D {top['knn_accuracy']:.3f}, "
            f"trustworthiness {top['trustworthiness']:.3f})" + (f", then {others}." if others else "."))


def _cluster(part: dict) -> str:
    km, gm = part["kmeans"], part["gmm"]
    return (f"- `cluster`: K-Means' k by {km['k_rule']} is {km['chosen_k']} (ARI against the letters "
            f"{km['purity']['ari']:.3f}); the Gaussian mixture's BIC is lowest at k={gm['chosen_k']} of "
            f"{gm['ks'][0]}..{gm['ks'][-1]} (ARI {gm['purity']['ari']:.3f}).")


BULLETS = {"mlp": _mlp, "pca_forest": _pca_forest, "embed": _embed, "cluster": _cluster}
