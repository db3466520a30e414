"""The long fuzz of every op against torch, on every kernel path this CPU
has: tests/robustness/fuzz_ops.py's cases, from a start seed on, for as long
as asked.  CI runs a short seeded block of the same cases
(tests/robustness/test_fuzz.py).

    python bench/fuzz.py --minutes 10            # seeds 1000000, 1000001, ...
    python bench/fuzz.py --minutes 60 --start 5000000

Prints the cases tried per op and kernel path, and every miss with the seed
that reproduces it (fuzz_ops.run_case(seed, isa)); exits 1 on a miss.
"""
import argparse
import collections
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "robustness"))
import fuzz_ops  # noqa: E402

from pytransformer import _kernels  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=1.0)
    ap.add_argument("--start", type=int, default=1_000_000, help="first seed")
    args = ap.parse_args()
    isas = _kernels.available_isas()
    counts, misses = collections.Counter(), []
    end = time.monotonic() + 60 * args.minutes
    seed = args.start
    while time.monotonic() < end:
        op = fuzz_ops.make_case(seed)[0]
        for isa in isas:
            counts[op, isa] += 1
            miss = fuzz_ops.run_case(seed, isa)
            if miss:
                misses.append(miss)
                print("MISS", miss, flush=True)
        seed += 1
    print(f"{sum(counts.values())} cases (seeds {args.start}..{seed - 1}) on {', '.join(isas)}:")
    for (op, isa), n in sorted(counts.items()):
        print(f"  {op:15s} {isa:7s} {n}")
    print(f"{len(misses)} misses")
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
