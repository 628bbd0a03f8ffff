"""The study's report: every number and figure, grouped by the reference's questions, each
published number beside this study's with a verdict.

:func:`compare` judges one reference value (``whole_study/reference.json``) against the parts'
results: *same*, *within noise* (and which noise), *differs* (and why), *not comparable* (a quick
profile, a row limit, other data, another machine) or *not run*. :func:`build_document` lays the
report out as a list of blocks (headings, paragraphs, tables, figures) that
:func:`render_markdown` and :func:`render_html` write out; the HTML embeds its figures as
base64 PNG, so it opens from disk on its own. :func:`write_report` writes ``report.md``,
``report.html`` and ``report.json`` (the comparisons as data).

Nothing here depends on the time it runs: the same results give the same report.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path

from labkit.files import write_json, write_text
from labkit.numbers import with_spread
from whole_study.parts import PART_NAMES, PARTS, elapsed_text
from whole_study.reference import load_reference

VERDICTS = ("same", "within noise", "differs", "not comparable", "not run")


class Missing(LookupError):
    """A path that leads nowhere in the results."""


# Looking numbers up ----------------------------------------------------------------------------


def resolve(results: dict[str, dict], path):
    """The value at ``path`` (a list: part name, then keys, list positions, or ``{key: value}``
    selectors; or a ``{"rule": ...}`` computation) in ``results`` ({part: results})."""
    if isinstance(path, dict):
        return _computed(results, path)
    value = results
    for step in path:
        if isinstance(step, dict):
            if not isinstance(value, list):
                raise Missing(path)
            matches = [item for item in value if isinstance(item, dict) and all(_equal(item.get(k), v) for k, v in step.items())]
            if not matches:
                raise Missing(path)
            value = matches[0]
        elif isinstance(step, int):
            if not isinstance(value, list) or not -len(value) <= step < len(value):
                raise Missing(path)
            value = value[step]
        else:
            if not isinstance(value, dict) or step not in value:
                raise Missing(path)
            value = value[step]
    return value


def _equal(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9)
    return a == b


def _computed(results: dict, spec: dict):
    from reduction.cluster_sweeps import k_by_elbow

    rules = {"k_by_elbow": k_by_elbow}
    if spec.get("rule") not in rules:
        raise ValueError(f"unknown rule {spec.get('rule')!r} in whole_study/reference.json")
    return rules[spec["rule"]](resolve(results, spec["ks"]), resolve(results, spec["values"]))


def _first(results: dict, paths):
    """(value, the part it came from) of the first path that resolves; Missing if none does."""
    for path in paths:
        try:
            value = resolve(results, path)
        except Missing:
            continue
        part = path["ks"][0] if isinstance(path, dict) else path[0]
        return value, part
    raise Missing(paths)


# Judging one value -----------------------------------------------------------------------------


def compare(entry: dict, results: dict[str, dict]) -> dict:
    """One reference value beside this study's: a JSON-ready row with ``verdict`` and ``reason``."""
    row = {
        "id": entry["id"],
        "question": entry["question"],
        "label": entry["label"],
        "reference": format_value(entry, entry["value"]),
        "reference_value": entry["value"],
        "measured": "—",
        "measured_value": None,
        "verdict": "not run",
        "reason": "",
        "source": entry["source"],
    }
    try:
        measured, part = _first(results, entry["path"])
    except Missing:
        parts = sorted({(path["ks"] if isinstance(path, dict) else path)[0] for path in entry["path"]})
        row["reason"] = f"part {' or '.join(parts)} not in this study's results"
        return row
    spread, seeds = _spread(entry, results)
    row["measured_value"] = measured
    row["measured"] = format_value(entry, measured, measured=True, spread=spread, seeds=seeds)
    blocked = _not_comparable(entry, results[part])
    if blocked:
        row["verdict"], row["reason"] = "not comparable", blocked
        return row
    row["verdict"], row["reason"] = _judge(entry, measured, spread, seeds, results, results[part])
    return row


def _spread(entry: dict, results: dict) -> tuple[float | None, int]:
    """(standard deviation over seeds, number of seeds), or (None, 1) for a single run."""
    if "spread" not in entry:
        return None, 1
    try:
        sd = resolve(results, entry["spread"])
        seeds = resolve(results, [*entry["spread"][:-1], "seeds"])
    except Missing:
        return None, 1
    return (float(sd), len(seeds)) if sd is not None and len(seeds) > 1 else (None, 1)


def _not_comparable(entry: dict, part_results: dict) -> str:
    conditions = part_results.get("study_part", {}).get("conditions", {})
    requires = entry.get("requires", [])
    if entry["kind"] == "timing":
        device = part_results.get("backend", {}).get("selected") or "this machine"
        return f"another machine and framework (the reference: Keras on its CPU; here: {device})"
    if "kaggle_data" in requires and not conditions.get("kaggle_data", False):
        return "not the Kaggle data"
    reasons = []
    if "full_profile" in requires and not conditions.get("full_profile", False):
        profile = conditions.get("profile", "?")
        reasons.append("quick profile" if profile == "quick" else f"profile {profile!r}, not the reference's settings")
    if "all_rows" in requires and not conditions.get("all_rows", False):
        reasons.append(f"only the first {conditions.get('limit_rows'):,} rows of each CSV")
    return "; ".join(reasons)


def _judge(entry: dict, measured, spread, seeds, results: dict, part_results: dict) -> tuple[str, str]:
    kind, value = entry["kind"], entry["value"]
    because = entry.get("reason_if_differs", "")
    if kind in ("exact", "computed"):
        if measured == value:
            return "same", ""
        return "differs", because
    if kind == "rounded":
        half_unit = 0.5 * 10 ** -entry.get("decimals", 0)
        difference = abs(measured * entry.get("scale", 1) - value)
        if difference <= half_unit * (1 + 1e-9):
            return "same", f"equal to the published {entry.get('decimals', 0)} decimals"
        return "differs", because or f"off by {difference:.{entry.get('decimals', 0) + 1}f}"
    if kind == "noisy":
        return _judge_noisy(entry, float(measured), spread, seeds)
    if kind == "grid_cell":
        return _judge_cell(entry, measured, results)
    raise ValueError(f"unknown kind {kind!r}")


def _judge_noisy(entry: dict, measured: float, spread: float | None, seeds: int) -> tuple[str, str]:
    value, tolerance = float(entry["value"]), entry["tolerance"]
    digits = entry.get("decimals", 4)
    if spread is not None:
        noise = 2 * spread
        noise_text = f"noise: 2 sd over {seeds} seeds = {noise:.{digits}f}"
    elif "abs" in tolerance:
        noise = float(tolerance["abs"])
        noise_text = f"noise: single run, stated tolerance ±{noise:g}"
    else:
        noise = float(tolerance["rel"]) * abs(value)
        noise_text = f"noise: single run, stated tolerance ±{tolerance['rel']:.0%} ({noise:.{digits}f})"
    difference = measured - value
    summary = f"difference {difference:+.{digits}f}; {noise_text}"
    if abs(difference) <= noise:
        return "within noise", summary
    return "differs", f"{entry['reason_if_differs']} ({summary})" if entry.get("reason_if_differs") else summary


def _judge_cell(entry: dict, best: dict, results: dict) -> tuple[str, str]:
    value = entry["value"]
    if all(best.get(key) == value[key] for key in value):
        return "same", ""
    try:
        cells = resolve(results, entry["cells"])
    except Missing:
        cells = []
    at_reference = [cell for cell in cells if all(cell.get(key) == value[key] for key in value)]
    if not at_reference:
        return "differs", "the reference's cell is not in this grid"
    gap = best["val_accuracy"] - at_reference[0]["val_accuracy"]
    tolerance = float(entry["tolerance"]["abs"])
    detail = (f"here the reference's cell scores {at_reference[0]['val_accuracy']:.5f} on validation, "
              f"{gap:.5f} below the best cell ({best['val_accuracy']:.5f}); stated tolerance {tolerance:g}")
    if gap <= tolerance:
        return "within noise", detail
    reason = entry.get("reason_if_differs")
    return "differs", f"{reason}; {detail}" if reason else detail


def format_value(entry: dict, value, *, measured: bool = False, spread: float | None = None, seeds: int = 1) -> str:
    """A reference or (``measured``) this study's value as the report shows it: the reference's
    digits and unit; a measured value scaled to the reference's unit (``scale``, e.g. 100 for %)."""
    if value is None:
        return "—"
    unit = entry.get("unit", "")
    if entry["kind"] == "grid_cell":
        return f"{value['n_estimators']} / {value['max_depth']}"
    if isinstance(value, dict) and {"low", "high"} <= set(value):
        return f"{value['low']:g}–{value['high']:g} {unit}".strip()
    scale = entry.get("scale", 1) if measured else 1
    if isinstance(value, bool):
        text = str(value)
    elif isinstance(value, int) and scale == 1:
        text = f"{value:,}"
    else:
        digits = entry.get("decimals", 2 if entry["kind"] == "timing" else 4)
        text = f"{float(value) * scale:.{digits}f}"
        if spread is not None:
            text += f" ± {spread * scale:.{digits}f} ({seeds} seeds)"
    if unit == "%":
        return text + "%"
    return f"{text} {unit}" if unit and unit != "rows" else text


def comparisons(results: dict[str, dict], reference: dict | None = None) -> list[dict]:
    """Every reference value compared, in the file's order."""
    reference = reference or load_reference()
    return [compare(entry, results) for entry in reference["values"]]


def verdict_counts(rows: list[dict]) -> dict[str, int]:
    return {verdict: sum(row["verdict"] == verdict for row in rows) for verdict in VERDICTS if any(row["verdict"] == verdict for row in rows)}


# The document ----------------------------------------------------------------------------------


@dataclass
class Heading:
    level: int
    text: str
    anchor: str = ""


@dataclass
class Para:
    text: str
    small: bool = False


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    verdict_column: int | None = None  # the column whose cells are verdicts (coloured in HTML)
    numeric: set[int] = field(default_factory=set)  # right-aligned columns


@dataclass
class Figure:
    path: str  # relative to the output folder
    caption: str


def build_document(out_dir: Path, results: dict[str, dict], rows: list[dict], reference: dict) -> list:
    """The report as blocks, from the parts' results and the comparisons."""
    blocks: list = [Heading(1, "Sign-MNIST study: this run beside the reference")]
    blocks += _overview(results, rows, reference)
    by_question = {question["id"]: [row for row in rows if row["question"] == question["id"]] for question in reference["questions"]}
    for number, question in enumerate(reference["questions"], 1):
        blocks.append(Heading(2, f"{number}. {question['title']}", question["id"]))
        blocks.append(Para(f"Reference: {reference['notebook']}, {question['source']}.", small=True))
        if by_question[question["id"]]:
            blocks.append(_comparison_table(by_question[question["id"]]))
        else:
            blocks.append(Para("The reference published no numbers here; this study's are below."))
        blocks += DETAILS[question["id"]](out_dir, results)
    blocks += _steps_section(results)
    blocks += _settings_section(results)
    return blocks


def _overview(results: dict, rows: list[dict], reference: dict) -> list:
    blocks = [Para("Every number and figure of the study, grouped by the questions of the reference notebook. "
                   "Each number the reference published (whole_study/reference.json, with where it comes from) "
                   "stands beside this study's, with a verdict.")]
    header = ["part", "profile", "runs on", "data", "computed", "time"]
    table_rows = []
    for name in PART_NAMES:
        part = results.get(name)
        if part is None:
            table_rows.append([f"{name} ({PARTS[name].title})", "not run", "", "", "", ""])
            continue
        info = part.get("study_part", {})
        conditions = info.get("conditions", {})
        data = "Kaggle release" if conditions.get("kaggle_data") else "other data"
        if conditions.get("limit_rows"):
            data += f", first {conditions['limit_rows']:,} rows"
        backend = part.get("backend", {})
        table_rows.append([
            f"{name} ({PARTS[name].title})", str(conditions.get("profile", part.get("profile", {}).get("name", "?"))),
            f"{backend.get('selected')} (asked: {backend.get('requested')})", data, info.get("computed_at", "?"),
            elapsed_text(info["seconds"]) if "seconds" in info else "?",
        ])
    blocks.append(Table(header, table_rows))
    counts = verdict_counts(rows)
    blocks.append(Para(f"{len(rows)} published numbers: " + ", ".join(f"{count} {verdict}" for verdict, count in counts.items()) + "."))
    blocks.append(Bullets([f"{kind}: {text}" for kind, text in reference["kinds"].items()]
                          + ["not comparable: this run cannot be held against the reference "
                             "(a quick profile, a row limit, other data, another machine); both numbers are shown",
                             "not run: the part that measures it is not in this study's results"]))
    return blocks


def _comparison_table(rows: list[dict]) -> Table:
    body = [[row["label"], row["reference"], row["measured"], row["verdict"], row["reason"], row["source"]] for row in rows]
    return Table(["quantity", "reference", "this study", "verdict", "why / noise", "reference's source"], body,
                 verdict_column=3, numeric={1, 2})


def _missing(name: str) -> list:
    return [Para(f"Part {name} is not in this study's results (run it with --parts {name}).")]


def _figure(results: dict, part: str, key: str, caption: str) -> list:
    path = results.get(part, {}).get("figures", {}).get(key)
    return [Figure(f"{part}/{path}", caption)] if path else []


def _f(value, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def _data_details(out_dir, results) -> list:
    rows = []
    for name in PART_NAMES:
        part = results.get(name)
        if part is None:
            continue
        data = part["data"]
        extra = []
        for key, text in (("forest_train_rows", "forests fit on"), ("sample_size", "clustering sample"), ("limit_rows", "row limit")):
            if data.get(key) is not None:
                extra.append(f"{text} {_f(data[key])}")
        if name == "embed":
            extra.append("maps on " + ", ".join(f"{m} {_f(r['rows'])}" for m, r in part["methods"].items()))
        rows.append([name, _f(data["n_train"]), _f(data["n_val"]), _f(data["n_test"]), "; ".join(extra)])
    if not rows:
        return [Para("No part ran.")]
    blocks = [Table(["part", "training rows", "validation rows", "test rows", "rows used"], rows, numeric={1, 2, 3})]
    for name in PART_NAMES:
        if name in results:
            data = results[name]["study_part"]["fingerprint"]["data"] if "study_part" in results[name] else None
            if data:
                blocks.append(Para("Data: train CSV sha256 " + data["train"]["sha256"][:16] + "…, test CSV sha256 "
                                   + data["test"]["sha256"][:16] + "… (of the decompressed files)", small=True))
            break
    return blocks


def _pca_details(out_dir, results) -> list:
    part = results.get("pca_forest")
    if part is None:
        return _missing("pca_forest")
    pca = part["pca"]
    blocks = [Bullets([
        f"{pca['n_components_95']} components keep {pca['variance_target']:.0%} of the variance of the "
        f"{_f(part['data']['n_train'])}-row training part (PCA on {pca['backend']})",
        f"the first two explain {pca['variance_first_two'][0]:.4%} and {pca['variance_first_two'][1]:.4%} "
        f"({pca['variance_first_two_total']:.4%} together)",
        f"mean squared error of the 10 reconstructed images: {pca['reconstruction_mse']:.1f} (pixel values 0-255)",
    ])]
    if "embed" in results and "pca" in results["embed"]["methods"]:
        ratio = results["embed"]["methods"]["pca"].get("explained_variance_ratio")
        if ratio:
            blocks.append(Para(f"The 2-D PCA map ({_f(results['embed']['methods']['pca']['rows'])} rows) explains "
                               f"{ratio[0]:.4%} and {ratio[1]:.4%}.", small=True))
    blocks += _figure(results, "pca_forest", "pca_cumulative_variance", "Cumulative explained variance")
    blocks += _figure(results, "pca_forest", "pca_reconstruction", "Training images and their 95% PCA reconstruction")
    return blocks


def _forest_details(name: str):
    def details(out_dir, results) -> list:
        part = results.get("pca_forest")
        if part is None:
            return _missing("pca_forest")
        grid, test = part["forests"][name], part["test"][name]
        best = grid["best"]
        blocks = [Bullets([
            f"grid: n_estimators {grid['n_estimators']} x max_depth {grid['max_depth']} ({len(grid['cells'])} cells, "
            f"{grid['scoring']}; forests grown: {grid['forests_grown']}, depths from the cache: {grid['depths_from_cache'] or 'none'}), "
            f"{_f(grid['n_train_rows'])} training rows, {grid['n_features']} features, on {grid['backend']}",
            f"best on validation: n_estimators {best['n_estimators']}, max_depth {best['max_depth']}: accuracy "
            f"{best['val_accuracy']:.5f}, precision {best['val_precision']:.4f}, recall {best['val_recall']:.4f}, F1 {best['val_f1']:.4f}",
            f"refit and tested: accuracy {test['test_accuracy']:.4f}, precision {test['test_precision']:.4f}, recall "
            f"{test['test_recall']:.4f}, F1 {test['test_f1']:.4f} (fit {test['fit_seconds']:.2f} s on {test['backend']})",
        ])]
        if name == "pca":
            fit = part["fit_time"]
            rows = [[f"{c['n_estimators']} / {c['max_depth']} ({c['settings_from']})", f"{c['fit_seconds_without_pca']:.2f}",
                     f"{c['fit_seconds_with_pca']:.2f}", f"{c['fit_time_ratio']:.2f}", f"{c['fit_seconds_with_pca_including_pca']:.2f}"]
                    for c in fit["comparisons"]]
            blocks.append(Para("Is training faster with PCA? The same forests fitted on both feature sets:"))
            blocks.append(Table(["n_estimators / max_depth", "s on pixels", "s on PCA features", "ratio", "s with the PCA itself"],
                                rows, numeric={1, 2, 3, 4}))
            blocks.append(Para(f"The PCA itself: {fit['pca_seconds']:.2f} s. Test accuracy with PCA minus without: "
                               f"{part['test_accuracy_difference_pca_minus_raw']:+.4f}. {fit['note']}.", small=True))
        blocks += _figure(results, "pca_forest", f"forest_{name}_heatmap", "Validation accuracy per grid cell (best framed)")
        blocks += _figure(results, "pca_forest", f"forest_{name}_confusion", "Test confusion matrix of the best forest")
        return blocks

    return details


def _maps_details(out_dir, results) -> list:
    part = results.get("embed")
    if part is None:
        return _missing("embed")
    rows = []
    for method, r in part["methods"].items():
        extra = {key: r[key] for key in ("kl_divergence", "reconstruction_error", "stress_1") if r.get(key) is not None}
        rows.append([method, _f(r["rows"]), r["place"], f"{r['seconds']:.1f}", _f(r["trustworthiness"], 3),
                     _f(r["knn_accuracy"], 3), ", ".join(f"{k} {v:.4g}" for k, v in extra.items())])
    best = max(part["methods"].items(), key=lambda item: item[1]["knn_accuracy"] or -1)[0]
    blocks = [Table(["map", "rows", "ran on", "fit s", "trustworthiness", f"{next(iter(part['methods'].values()))['knn_neighbors']}-NN accuracy in 2-D", "other"],
                    rows, numeric={1, 3, 4, 5}),
              Para(f"The letters separate best in the {best} map (highest 2-D k-NN accuracy, "
                   f"{part['methods'][best]['knn_folds']}-fold cross-validation).")]
    for method in part["methods"]:
        blocks += _figure(results, "embed", f"{method}_scatter", f"{method}: the first points, one colour per letter")
        blocks += _figure(results, "embed", f"{method}_thumbnails", f"{method}: image thumbnails on the map")
    return blocks


def _kmeans_details(out_dir, results) -> list:
    part = results.get("cluster")
    if part is None:
        return _missing("cluster")
    from reduction.cluster_sweeps import k_by_elbow

    km = part["kmeans"]
    silhouettes = km["silhouette"] or [None] * len(km["ks"])
    rows = [[str(k), f"{inertia:.6g}", _f(sil), f"{seconds:.2f}", str(n_iter)]
            for k, inertia, sil, seconds, n_iter in zip(km["ks"], km["inertia"], silhouettes, km["fit_seconds"], km["n_iter"])]
    elbow = k_by_elbow(km["ks"], km["inertia"])
    purity = km["purity"]
    return [
        Para(f"{_f(part['data']['sample_size'])} sampled training rows, PCA fitted on the sample: "
             f"{part['pca']['n_components']} components ({part['pca']['explained_variance']:.2%} of the variance). "
             f"K-Means on {km['place']}, n_init {km['params']['n_init']}, init {km['params']['init']}."),
        Table(["k", "inertia", "mean silhouette", "fit s", "iterations"], rows, numeric={1, 2, 3, 4}),
        Bullets([
            f"this project's rule ({km['k_rule']}: {km['k_rule_text']}): k = {km['chosen_k']}",
            f"the reference's rule (the elbow of the inertia curve, computed: reduction.cluster_sweeps.k_by_elbow): k = {elbow}",
            f"clusters at k = {km['chosen_k']} against the letters: ARI {purity['ari']:.4f}, NMI {purity['nmi']:.4f}, "
            f"majority-letter purity {purity['purity']:.4f}",
        ]),
        *_figure(results, "cluster", "kmeans_scores", "Silhouette and inertia against k"),
        *_figure(results, "cluster", "kmeans_clusters", f"The first images of each K-Means cluster (k = {km['chosen_k']})"),
    ]


def _gmm_details(out_dir, results) -> list:
    part = results.get("cluster")
    if part is None:
        return _missing("cluster")
    gm = part["gmm"]
    rows = [[str(k), f"{aic:.6g}", f"{bic:.6g}", "yes" if ok else "no", str(n_iter), f"{seconds:.2f}"]
            for k, aic, bic, ok, n_iter, seconds in zip(gm["ks"], gm["aic"], gm["bic"], gm["converged"], gm["n_iter"], gm["fit_seconds"])]
    purity, generated = gm["purity"], gm["generated"]
    return [
        Para(f"Full-covariance mixtures on {gm['place']} (starts on {gm['init_place']}), n_init {gm['params']['n_init']}, "
             f"init {gm['params']['init_params']}, on the same PCA features."),
        Table(["k", "AIC", "BIC", "converged", "iterations", "fit s"], rows, numeric={1, 2, 4, 5}),
        Bullets([
            f"lowest BIC (this project's rule): k = {gm['chosen_k']}; lowest AIC: k = {gm['k_by_lowest_aic']}",
            f"clusters at k = {gm['chosen_k']} against the letters: ARI {purity['ari']:.4f}, NMI {purity['nmi']:.4f}, "
            f"majority-letter purity {purity['purity']:.4f}",
            f"{generated['n']} images drawn from the mixture and mapped back through the PCA: pixel values "
            f"{generated['pixel_min']:.1f} to {generated['pixel_max']:.1f}, mean {generated['pixel_mean']:.1f}",
        ]),
        *_figure(results, "cluster", "gmm_aic_bic", "AIC and BIC against k"),
        *_figure(results, "cluster", "gmm_clusters", f"The first images of each mixture component's cluster (k = {gm['chosen_k']})"),
        *_figure(results, "cluster", "gmm_generated", "Images drawn from the mixture"),
    ]


def _mlp_details(out_dir, results) -> list:
    part = results.get("mlp")
    if part is None:
        return _missing("mlp")
    profile, timing, params = part["profile"], part["timing"], part["params"]

    def spread(row, key):
        return with_spread(row.get(key), row.get(f"{key}_std"), missing="—")

    several = any(len(row["seeds"]) > 1 for row in part["settings"])
    rows = [[row["act"], f"{row['lr']:g}", spread(row, "test_loss"), spread(row, "test_acc"), spread(row, "best_val_acc"),
             spread(row, "best_val_loss"), ", ".join(str(s) for s in row["seeds"])] for row in part["settings"]]
    blocks = [
        Para(f"{profile['epochs']} epochs, batch {profile['batch_size']}, all settings trained fused on {timing['device']}"
             + ("; mean ± sd over seeds" if several else "; one seed per setting") + "."),
        Table(["activation", "learning rate", "test loss", "test accuracy", "best validation accuracy", "best validation loss", "seeds"],
              rows, numeric={1, 2, 3, 4, 5}),
        Bullets([f"best learning rate for {act} (on validation): {best['lr']:g}, validation accuracy {best['best_val_acc']:.4f}, "
                 f"test accuracy {best['test_acc']:.4f}" for act, best in part["best_lr_per_activation"].items()]
                + [f"parameters: {params['total']:,} in all, {params['trainable']:,} trainable ({params['bias']:,} of them biases), "
                   f"{params['non_trainable']:,} non-trainable (the input normalisation's mean, variance and count, as Keras counts them)",
                   f"time: {timing['seconds_per_epoch_fused']:.2f} s per epoch for all {timing['members']} settings together "
                   f"({timing['seconds_per_epoch_per_setting']:.3f} s per setting), {timing['steps_per_epoch']} steps per epoch, "
                   f"{timing['ms_per_step_fused']:.2f} ms per fused step ({timing['ms_per_step_per_setting']:.3f} ms per setting)",
                   "TensorBoard: tensorboard --logdir mlp, in this report's folder (one run per setting: curves, HParams"
                   + (", pictures" if profile.get("pictures") else "") + ")"]),
        *_figure(results, "mlp", "curves", "Loss and accuracy per epoch (solid: training, dashed: validation)"),
    ]
    return blocks


DETAILS = {
    "data": _data_details,
    "pca": _pca_details,
    "forest_raw": _forest_details("raw"),
    "forest_pca": _forest_details("pca"),
    "maps": _maps_details,
    "kmeans": _kmeans_details,
    "gmm": _gmm_details,
    "mlp": _mlp_details,
}


def _steps_section(results: dict) -> list:
    blocks: list = [Heading(2, "Steps and times", "steps")]
    if not results:
        return blocks + [Para("No part ran.")]
    blocks.append(Para("Each part's timed steps, in the order they finished, and where each ran (the backend for the "
                       "unsupervised parts, the device for the MLP). Times are of the run that computed the part."))
    for name, part in results.items():
        backend = part.get("backend", {})
        info = part.get("study_part", {})
        blocks.append(Heading(3, f"{name}: {PARTS[name].title}"))
        blocks.append(Para(f"Asked for {backend.get('requested')}, ran on {backend.get('selected')}; computed "
                           f"{info.get('computed_at', '?')}, {elapsed_text(info['seconds']) if 'seconds' in info else '?'} in all.", small=True))
        rows = [[step, f"{entry['seconds']:.2f}", str(entry.get("place") or "")] for step, entry in part.get("steps", {}).items()]
        blocks.append(Table(["step", "seconds", "ran on"], rows, numeric={1}))
    return blocks


def _settings_section(results: dict) -> list:
    blocks: list = [Heading(2, "Settings and fingerprints", "settings")]
    if not results:
        return blocks
    blocks.append(Para("A part's results are reused while its fingerprint (settings, data digests, source digest, "
                       "library versions) stays the same; --force recomputes."))
    items = []
    for name, part in results.items():
        info = part.get("study_part", {})
        fingerprint = info.get("fingerprint", {})
        settings = fingerprint.get("settings", {})
        profile = ", ".join(f"{key}={_short(value)}" for key, value in settings.get("profile", {}).items())
        options = ", ".join(f"{key}={_short(value)}" for key, value in settings.get("options", {}).items())
        code = fingerprint.get("code", {})
        libraries = ", ".join(f"{key} {value}" for key, value in code.get("libraries", {}).items() if value)
        items.append(f"{name}: profile {profile}" + (f"; options {options}" if options else "")
                     + f"; seed {settings.get('seed')}; fingerprint {info.get('digest', '?')[:12]}; "
                     f"package {code.get('version')}, sources {code.get('sources', '?')[:12]}; {libraries}")
    blocks.append(Bullets(items))
    return blocks


def _short(value) -> str:
    if isinstance(value, (list, tuple)):
        return "(" + " ".join(f"{item:g}" if isinstance(item, float) else str(item) for item in value) + ")"
    return str(value)


# Rendering -------------------------------------------------------------------------------------


def render_markdown(blocks: list) -> str:
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Para):
            lines += [f"_{block.text}_" if block.small else block.text, ""]
        elif isinstance(block, Bullets):
            lines += [f"- {item}" for item in block.items] + [""]
        elif isinstance(block, Table):
            cell = lambda text: str(text).replace("|", "\\|").replace("\n", " ")  # noqa: E731
            lines.append("| " + " | ".join(cell(h) for h in block.header) + " |")
            lines.append("|" + "|".join("---:" if i in block.numeric else "---" for i in range(len(block.header))) + "|")
            for row in block.rows:
                cells = [cell(c) for c in row]
                if block.verdict_column is not None:
                    cells[block.verdict_column] = f"**{cells[block.verdict_column]}**"
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
        elif isinstance(block, Figure):
            lines += [f"![{block.caption}]({block.path})", "", f"_{block.caption}_ ({block.path})", ""]
    return "\n".join(lines).rstrip() + "\n"


CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: #1d1d1f;
       max-width: 1150px; margin: 2em auto; padding: 0 1.2em; line-height: 1.45; }
h1 { font-size: 1.7em; border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { font-size: 1.3em; margin-top: 2.2em; border-bottom: 1px solid #e5e5e5; padding-bottom: .2em; }
h3 { font-size: 1.05em; margin-top: 1.4em; }
table { border-collapse: collapse; margin: .8em 0 1.2em; font-size: .88em; }
th, td { border: 1px solid #d8d8d8; padding: .3em .55em; vertical-align: top; text-align: left; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.verdict { font-weight: 600; white-space: nowrap; }
td.same { background: #e3f4e1; } td.within-noise { background: #e6f0fb; } td.differs { background: #fde8e3; }
td.not-comparable, td.not-run { background: #f1f1f1; color: #555; }
p.small { font-size: .85em; color: #555; }
figure { margin: 1em 0 1.6em; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .85em; color: #555; }
"""


def render_html(blocks: list, out_dir: Path) -> str:
    """A self-contained page: figures embedded as base64 PNG, no scripts, no external links."""
    esc = html.escape
    title = next((block.text for block in blocks if isinstance(block, Heading)), "Report")
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{esc(title)}</title>\n"
             f"<style>{CSS}</style>\n</head>\n<body>"]
    for block in blocks:
        if isinstance(block, Heading):
            anchor = f' id="{esc(block.anchor)}"' if block.anchor else ""
            parts.append(f"<h{block.level}{anchor}>{esc(block.text)}</h{block.level}>")
        elif isinstance(block, Para):
            parts.append(f'<p class="small">{esc(block.text)}</p>' if block.small else f"<p>{esc(block.text)}</p>")
        elif isinstance(block, Bullets):
            parts.append("<ul>" + "".join(f"<li>{esc(item)}</li>" for item in block.items) + "</ul>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{esc(h)}</th>" for h in block.header)
            body = []
            for row in block.rows:
                cells = []
                for i, text in enumerate(row):
                    classes = []
                    if i in block.numeric:
                        classes.append("num")
                    if i == block.verdict_column:
                        classes += ["verdict", str(text).replace(" ", "-")]
                    attribute = f' class="{" ".join(classes)}"' if classes else ""
                    cells.append(f"<td{attribute}>{esc(str(text))}</td>")
                body.append("<tr>" + "".join(cells) + "</tr>")
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
        elif isinstance(block, Figure):
            path = out_dir / block.path
            if path.is_file():
                data = base64.b64encode(path.read_bytes()).decode("ascii")
                image = f'<img src="data:image/png;base64,{data}" alt="{esc(block.caption)}">'
            else:
                image = f"<p>(figure {esc(block.path)} is missing)</p>"
            parts.append(f"<figure>{image}<figcaption>{esc(block.caption)} ({esc(block.path)})</figcaption></figure>")
    parts.append("</body>\n</html>\n")
    return "\n".join(parts)


def write_report(out_dir: str | Path, results: dict[str, dict], reference: dict | None = None) -> dict[str, Path]:
    """Write OUT/report.md, OUT/report.html and OUT/report.json; their paths by kind."""
    out_dir = Path(out_dir)
    reference = reference or load_reference()
    rows = comparisons(results, reference)
    blocks = build_document(out_dir, results, rows, reference)
    parts = {name: {"profile": part.get("profile", {}).get("name"), "backend": part.get("backend"),
                    **{key: part.get("study_part", {}).get(key) for key in ("digest", "conditions", "computed_at", "seconds")},
                    "steps": part.get("steps")}
             for name, part in results.items()}
    return {
        "md": write_text(out_dir / "report.md", render_markdown(blocks)),
        "html": write_text(out_dir / "report.html", render_html(blocks, out_dir)),
        "json": write_json(out_dir / "report.json", {"parts": parts, "comparisons": rows, "counts": verdict_counts(rows)}),
    }
