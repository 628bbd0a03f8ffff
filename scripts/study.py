"""The whole study in one command: the MLP sweep, PCA and forests, the four maps, clustering,
then a report beside the reference notebook's numbers.

    python scripts/study.py                  # the reference's settings (hours on a CPU)
    python scripts/study.py --quick          # small grids and samples, 3 MLP epochs: minutes
    python scripts/study.py --parts pca_forest,cluster --backend cuml
    python scripts/study.py --backend torch  # t-SNE, MDS, PCA, the mixtures on torch's GPU (auto picks it without cuML)

Each part writes OUT/<part>/ (results.json and figures, as the part's own script would; the
MLP's TensorBoard runs in OUT/mlp/<run>/), then OUT/report.md and OUT/report.html. A part whose
results exist for the same settings, data and code is reused; --force recomputes. Ctrl-C keeps
the finished parts and a rerun resumes at the part it stopped in.
"""

from __future__ import annotations

from reduction.backend import enable_scipy_array_api

# As scripts/cluster.py: the PCA and the mixture on a torch device need SciPy's Array API
# support, which SciPy reads once, when first imported.
enable_scipy_array_api()

from pathlib import Path  # noqa: E402

from cli_kit import ArgumentParser, add_study_arguments, parsed_by, positive_int, run_script  # noqa: E402
from whole_study.parts import PART_NAMES, parse_override, parse_parts  # noqa: E402


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="study.py",
        description="Run every part of the Sign-MNIST study with the reference's settings (the MLP sweep: lr 1e-3 "
        "1e-5 1e-9 x relu, linear, 100 epochs, fused; PCA and random forests; PCA/t-SNE/LLE/MDS maps; K-Means and "
        "Gaussian mixtures), reusing parts already computed for the same settings, data and code, and write "
        "OUT/report.md and OUT/report.html: every number and figure, each published number of the reference "
        "beside this study's with a verdict.",
        epilog="--quick: the studies' quick profiles (small grids and samples) and 3 MLP epochs on the first 8,000 "
        "rows of each CSV; its comparisons with the reference are marked 'not comparable: quick profile' where "
        "they depend on the profile. --set PART.SETTING=VALUE changes one profile field or option (repeatable), "
        "e.g. --set cluster.k_rule=elbow --set mlp.epochs=20 --set embed.methods=pca,tsne; lists are comma "
        "lists or START:STOP:STEP.",
    )
    add_study_arguments(parser, "study", quick_help="small grids and samples, 3 MLP epochs on 8,000 rows per CSV (minutes)")
    parser.add_argument("--parts", type=parsed_by(parse_parts), default=list(PART_NAMES), metavar="P[,P...]",
                        help=f"parts to run, from {','.join(PART_NAMES)} (default all); the report also covers "
                        "earlier results of the others when they match the current settings")
    parser.add_argument("--force", action="store_true", help="recompute the selected parts even where results match")
    parser.add_argument("--limit-rows", type=positive_int, default=None, metavar="N",
                        help="use only the first N rows of each CSV in every part (quick trials)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED",
                        help="train every MLP setting once per seed; the report then measures the noise as the "
                        "spread over them (default: --seed alone, as the reference)")
    parser.add_argument("--set", dest="overrides", type=parsed_by(parse_override), action="append", default=[],
                        metavar="PART.SETTING=VALUE", help="change one setting of one part's profile (see below)")
    parser.add_argument("--readme-results", action="store_true",
                        help="print README's 'What a full run finds' block from the results in --out, run nothing")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.readme_results:
        from whole_study.readme import readme_block

        print(readme_block(args.out), end="")
        return 0
    from whole_study.parts import StudyConfig
    from whole_study.runner import run_study

    config = StudyConfig(
        data_dir=str(args.data_dir) if args.data_dir else None, seed=args.seed, backend=args.backend,
        quick=args.quick, limit_rows=args.limit_rows, mlp_seeds=tuple(args.seeds or ()), overrides=tuple(args.overrides),
    )
    outcome = run_study(config, Path(args.out), parts=args.parts, force=args.force)
    for name, part in outcome.parts.items():
        print(f"{name:<11} {part.status:<9} {part.reason}")
    print(f"report: {outcome.report_files['md']}, {outcome.report_files['html']}")
    return 0


if __name__ == "__main__":
    run_script(main, kept_on_interrupt="finished parts are kept; a rerun resumes where it stopped")
