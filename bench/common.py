"""What the benchmark scripts share: timing and thread control.

The scripts import the installed pytransformer (``pip install ".[bench]"``,
or ``pip install -e .`` while developing), never the source tree beside them.
"""
import statistics
import time


def timings(fn, warmup, repeats):
    """Seconds of each of `repeats` calls of fn(), after `warmup` calls."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return ts


def median_time(fn, warmup, repeats):
    """Median seconds per call of fn() (see timings)."""
    return statistics.median(timings(fn, warmup, repeats))


def set_threads(n):
    """The same thread count for pytransformer and torch."""
    import pytransformer
    import torch
    pytransformer.set_num_threads(n)
    torch.set_num_threads(n)
