"""Adam's step with some denormal floats in its state: denormals kept against flushed.

    python benchmarks/bench_denormals.py [--params 5000000] [--repeats 20]

One ``torch._fused_adam_`` call (the kernel ``torch.optim.Adam(fused=True)`` and ``MemberAdam``
run) over ``--params`` float32 parameters, the size of the 30-member fused sweep. A fraction of
the entries get a zero gradient and a first moment of 1e-40 (written as bits, so that nothing
flushes it on the way in), below float32's smallest normal number (1.2e-38): a model that fits
its training set leaves such values. Each way runs in its own process, because torch's worker
threads take the flush setting of the main thread when they start: "kept" is the CPU's default,
"flushed" sets ``torch.set_flush_denormal(True)`` before torch's first parallel operation, as
``lightning_modules.training.flush_denormals`` does around training. Prints one table of median
milliseconds per step and the ratio to no denormals.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

FRACTIONS = (0.0, 0.01, 0.05, 0.2)


def measure(params: int, repeats: int, flush: bool) -> dict[float, float]:
    import torch

    supported = torch.set_flush_denormal(True) if flush else None
    ms = {}
    for fraction in FRACTIONS:
        generator = torch.Generator().manual_seed(0)
        param = torch.randn(params, generator=generator) * 0.05
        grad = torch.randn(params, generator=generator) * 1e-3
        exp_avg = torch.randn(params, generator=generator) * 1e-4
        exp_avg_sq = torch.rand(params, generator=generator) * 1e-6
        tiny = torch.randperm(params, generator=generator)[: int(params * fraction)]
        denormal = torch.full((len(tiny),), 71362, dtype=torch.int32).view(torch.float32)  # 1.0e-40
        grad[tiny] = 0.0
        step = torch.zeros(())
        times = []
        for attempt in range(repeats + 3):  # 3 warm-up calls
            exp_avg.index_copy_(0, tiny, denormal)  # the kernel's decay would carry them to zero
            start = time.perf_counter()
            torch._fused_adam_([param], [grad], [exp_avg], [exp_avg_sq], [], [step], amsgrad=False, lr=1e-3, beta1=0.9,
                               beta2=0.999, weight_decay=0.0, eps=1e-7, maximize=False, grad_scale=None, found_inf=None)
            if attempt >= 3:
                times.append(time.perf_counter() - start)
        ms[fraction] = statistics.median(times) * 1e3
    return {"ms": ms, "supported": supported, "threads": torch.get_num_threads(), "torch": torch.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=int, default=5_000_000, help="parameters (default 5,000,000)")
    parser.add_argument("--repeats", type=int, default=20, help="timed steps per cell (default 20)")
    parser.add_argument("--way", choices=["kept", "flushed"], help=argparse.SUPPRESS)  # one way, in a child process
    args = parser.parse_args()
    if args.way:
        print(json.dumps(measure(args.params, args.repeats, args.way == "flushed")))
        return
    results = {}
    for way in ("kept", "flushed"):
        child = subprocess.run([sys.executable, __file__, "--params", str(args.params), "--repeats", str(args.repeats), "--way", way],
                               capture_output=True, text=True, check=True)
        results[way] = json.loads(child.stdout.strip().splitlines()[-1])
    flushed = results["flushed"]
    print(f"torch {flushed['torch']}, {flushed['threads']} threads, {args.params:,} parameters; "
          f"flushing supported: {flushed['supported']}\n")
    print("| denormal fraction | kept: ms per step | ratio | flushed: ms per step | ratio |")
    print("|---|---|---|---|---|")
    kept, flush = (results[way]["ms"] for way in ("kept", "flushed"))
    for fraction in FRACTIONS:
        key = str(fraction)
        print(f"| {fraction:g} | {kept[key]:.2f} | {kept[key] / kept['0.0']:.2f}x | {flush[key]:.2f} | {flush[key] / flush['0.0']:.2f}x |")


if __name__ == "__main__":
    main()
