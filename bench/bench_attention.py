"""Scaled dot-product attention alone: pytransformer's fused kernel beside
torch.nn.functional.scaled_dot_product_attention on the same inputs.

Batch 1, 8 heads, head dim 64, sequence L = S in 512..4096, causal and not,
1 and 2 threads.  Time: warm-up, then the median of several repeats, both in
this process, same inputs, same thread count; the ratio is torch / ours
(> 1: ours is faster).

Memory: the peak resident-memory growth of one call, measured in a fresh
subprocess per (implementation, case) so neither library's allocator caches
or the other's buffers blur it.  The child builds its inputs, resets the
kernel's peak-RSS mark (Linux: `echo 5 > /proc/self/clear_refs`), makes one
call (no warm-up: a warm-up's freed memory could be reused and hide the
growth), and reports VmHWM - VmRSS before the call.  This counts everything
the call touches, including its (1, 8, L, 64) output (L * 2 KiB) and any
one-time thread-pool set-up; it is what a user would see.  tracemalloc
would miss torch's and the C kernels' allocations entirely.

    python bench/bench_attention.py                   # full table
    python bench/bench_attention.py --seqs 512 1024   # a subset
Writes bench/results/attention.json.
"""
import argparse
import json
import os
import platform
import subprocess
import sys

import numpy as np

from pytransformer.benchmarks import timings  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

HEADS, HEAD_DIM = 8, 64


def inputs(L, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((1, HEADS, L, HEAD_DIM), dtype=np.float32) for _ in range(3)]


def runner(impl, L, causal, threads):
    """A no-argument function computing one attention with `impl`."""
    q, k, v = inputs(L)
    if impl == "pytransformer":
        import pytransformer
        from pytransformer import ops
        pytransformer.set_num_threads(threads)
        return lambda: ops.scaled_dot_product_attention(q, k, v, is_causal=causal)
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(threads)
    tq, tk, tv = (torch.from_numpy(x) for x in (q, k, v))

    def call():
        with torch.no_grad():
            return F.scaled_dot_product_attention(tq, tk, tv, is_causal=causal)
    return call


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(impl, L, causal, threads):
    """Peak RSS growth (bytes) of one call, in this (fresh) process."""
    call = runner(impl, L, causal, threads)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before = _status_kb("VmRSS")
    out = call()
    peak = _status_kb("VmHWM")
    del out
    print(json.dumps({"peak_growth_bytes": (peak - before) * 1024}))


def measure_memory(impl, L, causal, threads):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", impl, str(L),
           str(int(causal)), str(threads)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])["peak_growth_bytes"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seqs", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        impl, L, causal, threads = args.child
        child(impl, int(L), bool(int(causal)), int(threads))
        return

    import torch

    import pytransformer
    rows = []
    hdr = (f"{'L':>5} {'causal':>6} {'thr':>3} | {'ours ms':>9} {'torch ms':>9} {'ratio':>6} | "
           f"{'ours GF/s':>9} {'torch GF/s':>10} | {'ours MiB':>8} {'torch MiB':>9} "
           f"{'LxS MiB':>8}")
    print(f"attention: batch 1, {HEADS} heads, head dim {HEAD_DIM}; "
          f"pytransformer {pytransformer.cpu_info()['isa']}, torch {torch.__version__}")
    print(hdr)
    print("-" * len(hdr))
    for L in args.seqs:
        for causal in (False, True):
            for threads in args.threads:
                # fewer repeats where one call takes long
                reps = max(3, min(args.repeats, int(2e9 / (L * L * HEADS * HEAD_DIM))))
                ts = timings({"pt": runner("pytransformer", L, causal, threads),
                              "torch": runner("torch", L, causal, threads)}, reps)
                ts_ours, ts_torch = ts["pt"], ts["torch"]
                t_ours, t_torch = float(np.median(ts_ours)), float(np.median(ts_torch))
                # useful flops: Q K^T and P V, halved by the causal mask
                flops = 4.0 * HEADS * L * L * HEAD_DIM * (0.5 if causal else 1.0)
                row = {"L": L, "S": L, "heads": HEADS, "head_dim": HEAD_DIM,
                       "causal": causal, "threads": threads,
                       "ours_s": t_ours, "torch_s": t_torch, "ratio": t_torch / t_ours,
                       "ours_gflops": flops / t_ours / 1e9,
                       "torch_gflops": flops / t_torch / 1e9,
                       "ours_times_s": ts_ours, "torch_times_s": ts_torch,
                       "score_matrix_bytes": 4 * HEADS * L * L}
                if not args.no_memory:
                    row["ours_peak_bytes"] = measure_memory("pytransformer", L, causal, threads)
                    row["torch_peak_bytes"] = measure_memory("torch", L, causal, threads)
                rows.append(row)
                mem = ""
                if not args.no_memory:
                    mem = (f"{row['ours_peak_bytes'] / 2**20:8.1f} "
                           f"{row['torch_peak_bytes'] / 2**20:9.1f} ")
                else:
                    mem = f"{'-':>8} {'-':>9} "
                print(f"{L:5d} {str(causal):>6} {threads:3d} | {t_ours * 1e3:9.2f} "
                      f"{t_torch * 1e3:9.2f} {row['ratio']:6.2f} | {row['ours_gflops']:9.1f} "
                      f"{row['torch_gflops']:10.1f} | {mem}{row['score_matrix_bytes'] / 2**20:8.0f}",
                      flush=True)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    path = os.path.join(HERE, "results", "attention.json")
    with open(path, "w") as f:
        json.dump({"machine": {"platform": platform.platform(), "processor": platform.processor(),
                               "cpu_count": os.cpu_count()},
                   "pytransformer": pytransformer.cpu_info(), "torch": torch.__version__,
                   "memory_method": "peak RSS growth (VmHWM - VmRSS) of one call in a fresh "
                                    "subprocess, peak mark reset via /proc/self/clear_refs",
                   "rows": rows}, f, indent=1)
    print(f"wrote {os.path.relpath(path, ROOT)}")


if __name__ == "__main__":
    main()
