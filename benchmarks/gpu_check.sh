#!/usr/bin/env bash
# One check of the GPU paths on a machine with a CUDA device:
#   1. the GPU-marked tests (python -m pytest -m gpu -q), at most GPU_CHECK_TEST_SECONDS (150 s);
#   2. one MLP training epoch on CUDA: MLPClassifier, FusedMLPs with the sweep's 6 settings and
#      with 6 x 5 seeds;
#   3. the 6-setting learning-rate sweep for a few epochs, one run per setting and fused;
#   4. scikit-learn's Array API path on torch CUDA tensors: PCA (95% of the variance) and the
#      Gaussian mixture (k=25), each beside NumPy on the CPU;
#   5. only with --full-sweeps: the fused sweep's whole 100 epochs, 6 settings and 6 x 5 seeds;
#   6. only with --study: the whole study, `scripts/study.py --backend torch` with the reference's
#      settings, into a fresh folder (--study-out DIR to keep it), and each part's steps with their
#      seconds and places.
# Then one table (benchmarks/gpu_check.py prints it). GPU_CHECK_SECONDS bounds steps 2-6 (default
# 200 s). Without a CUDA device it says "skipped: no CUDA device" and exits 0, unless --cpu-dry-run.
#
#   bash benchmarks/gpu_check.sh                   # extra arguments go to benchmarks/gpu_check.py
#   GPU_CHECK_SECONDS=420 bash benchmarks/gpu_check.sh --full-sweeps
#   GPU_CHECK_TEST_SECONDS=90 GPU_CHECK_SECONDS=470 bash benchmarks/gpu_check.sh --only study --budget 450 \
#       --study-out "$OUT/study"                   # the GPU tests, then the whole study: under 10 minutes
#   bash benchmarks/gpu_check.sh --cpu-dry-run --only study   # the same steps on the CPU, small (--quick),
#                                                  # the GPU tests skipped naming why
#
# Without the project's .venv (e.g. a lent GPU machine whose image has torch, Lightning and
# scikit-learn), it runs with that machine's python3 and the repository on PYTHONPATH. TorchDR
# (pure Python) may be missing there: a folder .gpu-site made here with
# `pip install --no-deps --target .gpu-site torchdr==0.5` and carried along is put on PYTHONPATH.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -f .venv/bin/activate ]; then
    . .venv/bin/activate
fi
PYTHON=python
command -v python >/dev/null 2>&1 || PYTHON=python3
if ! (cd / && "$PYTHON" -c 'import datamodules') 2>/dev/null; then
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ -d .gpu-site ]; then
    export PYTHONPATH="$PWD/.gpu-site${PYTHONPATH:+:$PYTHONPATH}"
fi
# SciPy reads this on its first import; scikit-learn's Array API dispatch needs it.
export SCIPY_ARRAY_API=1

dry_run=0
args=()
for arg in "$@"; do
    if [ "$arg" = "--cpu-dry-run" ]; then dry_run=1; else args+=("$arg"); fi
done
if ! "$PYTHON" -c 'import torchdr' 2>/dev/null; then
    echo "note: TorchDR does not import: the torch backend's t-SNE cannot run (pip install --no-deps --target .gpu-site torchdr==0.5 on a machine with PyPI, and carry .gpu-site)"
fi

if [ "$dry_run" = 1 ]; then
    echo "CPU dry run: the GPU tests skipped (they need a CUDA device); the timings on the CPU with --quick"
    summary="skipped: CPU dry run, no CUDA device used"
    test_status=0
    test_seconds=0
    args=(--device cpu --quick "${args[@]}")
else
    if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
        echo "skipped: no CUDA device"
        exit 0
    fi
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true

    # 1. GPU tests: at most GPU_CHECK_TEST_SECONDS; the summary line goes into the table.
    if [ "${GPU_CHECK_TESTS:-1}" = 0 ]; then
        summary="skipped: GPU_CHECK_TESTS=0"
        test_status=0
        test_seconds=0
    else
        started=$(date +%s.%N)
        test_log=$(mktemp)
        test_limit=${GPU_CHECK_TEST_SECONDS:-150}
        timeout "$test_limit" "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider 2>&1 | tee "$test_log" | tail -n 25
        test_status=${PIPESTATUS[0]}
        test_seconds=$("$PYTHON" -c "print(round($(date +%s.%N) - $started, 1))")
        summary=$(grep -E '(passed|failed|skipped|error|no tests ran)' "$test_log" | tail -n 1 | sed 's/=//g; s/^ *//; s/ *$//')
        rm -f "$test_log"
        if [ "$test_status" = 124 ]; then
            summary="timed out after $test_limit s: $summary"
        fi
        summary="${summary:-no summary} (exit $test_status)"
    fi
fi

# 2-6. Timings and the table: at most 3.3 minutes unless GPU_CHECK_SECONDS says otherwise.
seconds=${GPU_CHECK_SECONDS:-200}
timeout "$seconds" "$PYTHON" benchmarks/gpu_check.py --tests "$summary" --tests-seconds "$test_seconds" "${args[@]}"
check_status=$?
if [ "$check_status" = 124 ]; then
    echo "gpu_check.py timed out after $seconds s (rows above were measured)"
fi
# Fail when the tests or the timings failed, so a caller sees it in the exit code.
[ "$test_status" = 0 ] && [ "$check_status" = 0 ]
