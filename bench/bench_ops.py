"""Benchmark pytransformer's kernels beside torch and numpy, in one run.

    python bench/bench_ops.py                  # full run, 1 and 2 threads
    python bench/bench_ops.py --quick          # a fast subset
    python bench/bench_ops.py --threads 1 --out /tmp/bench

What it measures (every figure a ratio taken in this same process run):

* the machine's fp32 peak, calibrated by a loop of independent AVX-512 FMAs
  (pytransformer._kernels.fma_peak_gflops) at each thread count;
* memory bandwidth (a streaming read of a 256 MiB buffer by the same threads,
  _kernels.stream_read_gbs), the ceiling for decoding at batch 1;
* sgemm GFLOP/s for square sizes 128..2048 and for Transformer shapes
  (M in 1, 8, 128, 1024 tokens; K, N in {512, 2048}): pytransformer
  (ops.matmul, and ops.linear with a packed weight), torch.matmul, numpy
  (OpenBLAS) -- each as a fraction of the calibrated peak, with the max
  error against torch;
* the bf16 GEMM (compute_type="bfloat16") at 1024^3 on one thread, beside
  our float32 GEMM and torch's bf16 matmul: GFLOP/s, each as a fraction of
  its instruction's peak calibrated in the same rounds (the FMA loop for
  float32, the VDPBF16PS loop for bf16 where the CPU has AVX512_BF16);
* the int8 GEMM (compute_type="int8") at 1024^3 on one thread, beside
  torch's int8 x int8 -> int32 matmul (torch._int_mm): GOP/s against the
  VPDPBUSD or TDPBSSD loop's peak;
* softmax, layer norm, RMS norm, rotary embedding and SiLU-and-multiply GB/s
  (bytes read + written) beside torch, at Transformer and SmolLM2-135M sizes
  (rope's torch peer with its cos/sin precomputed, as a model shares them
  between layers).

Timing: warm-up, then the median of several rounds; in each round every
candidate runs for ~20 ms in turn, beside a short FMA peak sample, so ratios
compare the same moments of a shared machine.  The OpenMP wait policy is
bench/common.py's (a short spin, then sleep).  A table goes to stdout, JSON and a PNG
plot to bench/results/ (or --out); progress goes to stderr.
"""
import argparse
import ctypes
import json
import os
import platform
import sys
import time

import common  # noqa: F401,E402  -- first: the OpenMP wait policy (see common.py)

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

import pytransformer  # noqa: E402
from pytransformer import _kernels, ops  # noqa: E402
from pytransformer.benchmarks import timings  # noqa: E402

from lowp_gemm import bf16_row, int8_row, print_bf16, print_int8  # noqa: E402


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ----------------------------------------------------------------- timing --

def bench(fn, repeats, min_time=0.02):
    """Median seconds per call of fn() (see compare)."""
    return compare({"f": fn}, repeats, min_time)["f"]


def compare(fns, repeats, min_time=0.02, peak=None):
    """Median seconds per call of each fn in `fns` (name -> callable).

    Warm-up, then `repeats` rounds; in each round every candidate runs for
    about min_time in turn (and, with peak=(nthreads, iters), a short FMA
    calibration sample), so that on a shared machine all of them see the same
    moments and their ratios stay meaningful.  Returns name -> median seconds,
    plus "_peak" -> median GFLOP/s of the calibration samples."""
    peaks = []

    def after_call(name):
        if name == "numpy":
            # OpenBLAS's worker threads spin for up to 2^28 cycles (~70 ms)
            # after a call; let them park before the next candidate, or
            # they hold a core that the next multi-threaded run needs
            time.sleep(0.1)

    samples = timings(fns, repeats, warmup=1, min_time=min_time,
                      before_round=None if peak is None else
                      lambda: peaks.append(_kernels.fma_peak_gflops(*peak)),
                      after_call=after_call)
    out = {name: float(np.median(v)) for name, v in samples.items()}
    # best sample too: on a shared machine it is the better estimate of what
    # the code does when it has the core
    out.update({name + "_best": float(np.min(v)) for name, v in samples.items()})
    if peaks:
        out["_peak"] = float(np.median(peaks))
        out["_peak_best"] = float(np.max(peaks))
    return out


# ------------------------------------------------------ numpy's BLAS threads --

class BlasThreads:
    """Set OpenBLAS's thread count at run time, as threadpoolctl does: find the
    OpenBLAS numpy loaded and call its set_num_threads.  Uses threadpoolctl
    when it is installed."""

    NAMES = ("openblas_set_num_threads", "scipy_openblas_set_num_threads64_",
             "openblas_set_num_threads64_", "scipy_openblas_set_num_threads")

    def __init__(self):
        self.how = None
        self._tp = None
        self._fn = None
        try:
            import threadpoolctl
            self._tp = threadpoolctl
            self.how = "threadpoolctl"
            return
        except ImportError:
            pass
        np.ones((64, 64), np.float32) @ np.ones((64, 64), np.float32)   # load the BLAS
        try:
            with open("/proc/self/maps") as f:
                libs = {line.split()[-1] for line in f if "openblas" in line.lower()}
        except OSError:
            libs = set()
        for lib in sorted(libs):
            try:
                dll = ctypes.CDLL(lib)
            except OSError:
                continue
            for name in self.NAMES:
                fn = getattr(dll, name, None)
                if fn is not None:
                    self._fn = fn
                    self.how = f"{os.path.basename(lib)}:{name}"
                    return

    def set(self, n):
        if self._tp is not None:
            self._limiter = self._tp.threadpool_limits(n, user_api="blas")
            return True
        if self._fn is not None:
            self._fn(int(n))
            return True
        return False


# ------------------------------------------------------------- the kernels --

def max_err(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def gemm_row(name, M, N, K, nt, repeats, rng, torch, blas_ok, packed_too=False):
    """One GEMM shape: C (M x N) = A (M x K) . B (K x N).  B is a Linear
    weight W (N x K) read transposed (b = W.T, a view), as a model does."""
    a = rng.standard_normal((M, K), dtype=np.float32)
    w = rng.standard_normal((N, K), dtype=np.float32) / np.float32(np.sqrt(K))
    b = w.T
    ta, tw = torch.from_numpy(a), torch.from_numpy(w)
    flops = 2.0 * M * N * K
    row = {"name": name, "M": M, "N": N, "K": K, "threads": nt}
    ref = torch.matmul(ta, tw.T).numpy()
    row["pt_err"] = max_err(ops.matmul(a, b), ref)
    fns = {"pt": lambda: ops.matmul(a, b), "torch": lambda: torch.matmul(ta, tw.T)}
    if packed_too:
        pw = ops.pack_weight(w)
        fns["pt_packed"] = lambda: ops.linear(a, pw)
        row["pt_packed_err"] = max_err(ops.linear(a, pw), ref)
    if blas_ok:
        fns["numpy"] = lambda: np.matmul(a, b)
        row["numpy_err"] = max_err(np.matmul(a, b), ref)
    # ~5 ms of FMAs per calibration sample (at ~130 GFLOP/s per thread)
    t = compare(fns, repeats, peak=(nt, 2_500_000))
    for k in fns:
        row[k + "_gflops"] = flops / t[k] * 1e-9
        row[k + "_gflops_best"] = flops / t[k + "_best"] * 1e-9
    if packed_too and M <= 32:   # decoding sizes: the cost is streaming the weight
        row["pt_packed_weight_gbs"] = 4.0 * N * K / t["pt_packed"] * 1e-9
    row["peak_gflops"] = t["_peak"]
    row["pt_frac_peak"] = row["pt_gflops"] / t["_peak"] if t["_peak"] else float("nan")
    row["pt_vs_torch"] = row["pt_gflops"] / row["torch_gflops"]
    row["peak_gflops_best"] = t["_peak_best"]
    row["pt_frac_peak_best"] = row["pt_gflops_best"] / t["_peak_best"] if t["_peak_best"] else float("nan")
    row["pt_vs_torch_best"] = row["pt_gflops_best"] / row["torch_gflops_best"]
    return row


def rope_peer(torch, x, pos, base=10000.0):
    """torch's rotary embedding on x (B, T, H, D) as transformers applies it
    (x*cos + rotate_half(x)*sin), with cos/sin computed once beforehand -- as
    a model shares them between layers -- so only the rotation is timed."""
    D = x.shape[-1]
    inv = 1.0 / (base ** (torch.arange(0, D, 2, dtype=torch.float) / D))
    freqs = torch.from_numpy(pos).float()[..., None] * inv
    emb = torch.cat((freqs, freqs), -1)
    cos, sin = emb.cos()[:, :, None, :], emb.sin()[:, :, None, :]
    tx = torch.from_numpy(x)

    def f():
        x1, x2 = tx[..., : D // 2], tx[..., D // 2:]
        return tx * cos + torch.cat((-x2, x1), -1) * sin
    return f


def rowwise_row(op, shape, nt, repeats, rng, torch):
    x = rng.standard_normal(shape, dtype=np.float32)
    tx = torch.from_numpy(x)
    n = shape[-1]
    nbytes = 2.0 * x.nbytes                   # read the input, write the output
    F = torch.nn.functional
    if op == "softmax":
        f_pt = lambda: ops.softmax(x, -1)      # noqa: E731
        f_t = lambda: torch.softmax(tx, -1)    # noqa: E731
    elif op == "rms_norm":
        w = rng.standard_normal(n, dtype=np.float32)
        tw = torch.from_numpy(w)
        f_pt = lambda: ops.rms_norm(x, (n,), w)                 # noqa: E731
        f_t = lambda: F.rms_norm(tx, (n,), tw)                  # noqa: E731
    elif op == "silu_and_mul":                # x = [gate | up] -> (rows, n/2)
        nbytes = 1.5 * x.nbytes
        f_pt = lambda: ops.silu_and_mul(x)                      # noqa: E731
        f_t = lambda: F.silu(tx[..., : n // 2]) * tx[..., n // 2:]  # noqa: E731
    elif op == "rope":                        # x (B, T, H, D), positions from 1000
        pos = np.broadcast_to(1000 + np.arange(shape[1]), shape[:2]).copy()
        f_pt = lambda: ops.rope(x, pos)                         # noqa: E731
        f_t = rope_peer(torch, x, pos)
    else:
        w = rng.standard_normal(n, dtype=np.float32)
        bb = rng.standard_normal(n, dtype=np.float32)
        tw, tb = torch.from_numpy(w), torch.from_numpy(bb)
        f_pt = lambda: ops.layer_norm(x, (n,), w, bb)                      # noqa: E731
        f_t = lambda: torch.nn.functional.layer_norm(tx, (n,), tw, tb)    # noqa: E731
    err = max_err(f_pt(), f_t().numpy())
    t = compare({"pt": f_pt, "torch": f_t}, repeats)
    tp, tt = t["pt"], t["torch"]
    return {"name": op, "shape": list(shape), "threads": nt, "pt_gbs": nbytes / tp * 1e-9,
            "torch_gbs": nbytes / tt * 1e-9, "pt_vs_torch": tt / tp, "pt_err": err}


def read_bandwidth(nt, repeats):
    """GB/s that nt threads read streaming through a 256 MiB buffer, each its
    own contiguous share (_kernels.stream_read_gbs), the median of a few
    samples: what batch-1 decoding, which reads every weight once, can
    reach."""
    buf = np.ones(64 << 20, dtype=np.float32)
    return float(np.median([_kernels.stream_read_gbs(nt, buffer=buf) for _ in range(repeats)]))


# ------------------------------------------------------------------ report --

def fmt(v, spec=".1f"):
    return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, spec)


def print_tables(res):
    print(f"# pytransformer {res['version']}  isa={res['isa']}  cpu={res['cpu']}")
    print(f"# numpy BLAS threads: {res['numpy_threads']}; OMP_WAIT_POLICY={res['omp_wait_policy']}"
          f" GOMP_SPINCOUNT={res.get('gomp_spincount')}")
    for nt, p in res["peak_gflops"].items():
        print(f"# calibrated fp32 FMA peak, {nt} thread(s): {p:.1f} GFLOP/s at start "
              f"(%peak below uses the peak sampled between each row's timings)")
    for nt, g in res["read_gbs"].items():
        print(f"# streaming read (256 MiB), {nt} thread(s): {g:.1f} GB/s")
    if res.get("loadavg_start"):
        print(f"# load average at start / end: {res['loadavg_start'][0]:.2f} / "
              f"{res['loadavg_end'][0]:.2f} (on {os.cpu_count()} CPUs; timings on a busy "
              f"machine are low, compare the ratios)")
    print()
    hdr = (f"{'shape':<22}{'thr':>4}{'peak':>7}{'pt GF/s':>9}{'%peak':>7}{'packed':>8}{'torch':>8}"
           f"{'numpy':>8}{'pt/torch':>9}{'err vs torch':>14}   best: {'pt':>6}{'%peak':>6}"
           f"{'pt/torch':>9}")
    print("## sgemm  (C = A . W^T; 'packed' = ops.linear with pack_weight; GFLOP/s are medians,")
    print("##         'best' columns use each candidate's fastest sample and the highest peak sample)")
    print(hdr)
    for r in res["gemm"]:
        shape = f"{r['name']} {r['M']}x{r['N']}x{r['K']}"
        extra = ""
        if "pt_packed_weight_gbs" in r:
            extra = f"  (packed: {r['pt_packed_weight_gbs']:.1f} GB/s of weights"
            read = res["read_gbs"].get(str(r["threads"]))
            if read and 4 * r["N"] * r["K"] > 32 << 20:   # beyond the caches: memory-bound
                extra += f", {100 * r['pt_packed_weight_gbs'] / read:.0f}% of the read"
            extra += ")"
        print(f"{shape:<22}{r['threads']:>4}{fmt(r['peak_gflops'], '.0f'):>7}{fmt(r['pt_gflops']):>9}"
              f"{fmt(100 * r['pt_frac_peak'], '.0f'):>7}{fmt(r.get('pt_packed_gflops')):>8}"
              f"{fmt(r['torch_gflops']):>8}{fmt(r.get('numpy_gflops')):>8}"
              f"{fmt(r['pt_vs_torch'], '.2f'):>9}{fmt(r['pt_err'], '.2e'):>14}         "
              f"{fmt(r['pt_gflops_best']):>6}{fmt(100 * r['pt_frac_peak_best'], '.0f'):>6}"
              f"{fmt(r['pt_vs_torch_best'], '.2f'):>9}{extra}")
    print()
    print("## row-wise kernels (GB/s, bytes read + written; rope's torch peer has its cos/sin "
          "precomputed)")
    print(f"{'op':<14}{'shape':<18}{'thr':>4}{'pt GB/s':>9}{'torch':>8}{'pt/torch':>9}"
          f"{'err vs torch':>14}")
    for r in res["rowwise"]:
        print(f"{r['name']:<14}{str(tuple(r['shape'])):<18}{r['threads']:>4}"
              f"{r['pt_gbs']:>9.1f}{r['torch_gbs']:>8.1f}{r['pt_vs_torch']:>9.2f}"
              f"{r['pt_err']:>14.2e}")
    if res.get("bf16"):
        print()
        print_bf16(res["bf16"])
    if res.get("int8"):
        print()
        print_int8(res["int8"])
    s = res.get("scaling")
    if s:
        print()
        print(f"## sgemm 1024^3: 2 threads / 1 thread = {s:.2f}x (medians), "
              f"{res['scaling_best']:.2f}x (best samples)")


def plot(res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    ax = axes[0]
    for nt in res["threads"]:
        rows = [r for r in res["gemm"] if r["name"] == "square" and r["threads"] == nt]
        if not rows:
            continue
        n = [r["M"] for r in rows]
        ax.plot(n, [r["pt_gflops"] for r in rows], "o-", label=f"pytransformer, {nt}T")
        ax.plot(n, [r["torch_gflops"] for r in rows], "s--", label=f"torch, {nt}T")
        if all("numpy_gflops" in r for r in rows):
            ax.plot(n, [r["numpy_gflops"] for r in rows], "^:", label=f"numpy, {nt}T")
        ax.axhline(res["peak_gflops"][str(nt)], color="gray", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("n (square n x n x n)")
    ax.set_ylabel("GFLOP/s")
    ax.set_title("sgemm, square (gray: calibrated FMA peak)")
    ax.legend(fontsize=7)
    ax = axes[1]
    nt = max(res["threads"])
    rows = [r for r in res["gemm"] if r["name"] == "layer" and r["threads"] == nt]
    if rows:
        x = np.arange(len(rows))
        ax.bar(x - 0.27, [r.get("pt_packed_gflops", r["pt_gflops"]) for r in rows], 0.27,
               label="pytransformer (packed)")
        ax.bar(x, [r["torch_gflops"] for r in rows], 0.27, label="torch")
        ax.bar(x + 0.27, [r.get("numpy_gflops", 0.0) for r in rows], 0.27, label="numpy")
        ax.set_xticks(x)
        ax.set_xticklabels([f"{r['M']}x{r['N']}x{r['K']}" for r in rows], rotation=60,
                           fontsize=7)
        ax.set_yscale("log")
        ax.set_title(f"Transformer shapes M x N x K, {nt} thread(s)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -------------------------------------------------------------------- main --

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts (1,2)")
    p.add_argument("--quick", action="store_true", help="a fast subset of the shapes")
    p.add_argument("--repeats", type=int, default=None, help="samples per measurement")
    p.add_argument("--out", default=os.path.join(HERE, "results"), help="output directory")
    p.add_argument("--isa", default=None, help="force a kernel path (default: the best)")
    p.add_argument("--decoding-only", action="store_true",
                   help="only the vocabulary-projection rows (K 512, N 32000, M 1-32): "
                        "a 65 MB weight streamed from memory by a few rows")
    p.add_argument("--bf16-only", action="store_true",
                   help="only the bf16 and int8 GEMM rows (1024^3, one thread)")
    args = p.parse_args(argv)

    import torch
    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    repeats = args.repeats or (3 if args.quick else 7)
    if args.isa:
        _kernels.set_isa(args.isa)
    rng = np.random.default_rng(0)
    blas = BlasThreads()

    squares = [128, 512, 1024] if args.quick else [128, 256, 512, 1024, 2048]
    Ms = [1, 128, 1024] if args.quick else [1, 8, 128, 1024]
    KN = [(512, 2048), (2048, 512)] if args.quick else [(512, 512), (512, 2048), (2048, 512),
                                                         (2048, 2048)]
    rowwise = [("softmax", (8 * 512, 512)), ("softmax", (4096, 2048)), ("softmax", (64, 32768)),
               ("layer_norm", (8 * 512, 512)), ("layer_norm", (4096, 2048)),
               ("layer_norm", (64, 32768)),
               # SmolLM2-135M's sizes: d_model 576, 9 query heads of 64, FFN 1536
               ("rms_norm", (8 * 512, 576)), ("rms_norm", (1, 576)), ("rms_norm", (4096, 2048)),
               ("rope", (8, 512, 9, 64)), ("rope", (1, 1, 9, 64)),
               ("silu_and_mul", (8 * 512, 2 * 1536)), ("silu_and_mul", (1, 2 * 1536))]
    # a decoding step's vocabulary projection: 1-32 rows (batch x beams) over a
    # weight too large for any cache
    vocab = [(M, 512, 32000) for M in ([1, 8] if args.quick else [1, 4, 8, 12, 32])]
    if args.decoding_only:
        squares, Ms, rowwise = [], [], []
    if args.quick:
        rowwise = rowwise[:2] + rowwise[3:5] + rowwise[6:7] + rowwise[9:10] + rowwise[11:12]

    res = {"version": pytransformer.__version__, "isa": _kernels.get_isa(),
           "cpu": platform.processor() or platform.machine(), "threads": threads,
           "torch": torch.__version__, "numpy": np.__version__,
           "numpy_threads": blas.how or "not controlled (OpenBLAS not found)",
           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
           "gomp_spincount": os.environ.get("GOMP_SPINCOUNT"),
           "peak_gflops": {}, "gemm": [], "rowwise": [], "quick": args.quick,
           "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    res["read_gbs"] = {}
    for nt in threads:
        log(f"calibrating: streaming read, {nt} thread(s)")
        res["read_gbs"][str(nt)] = read_bandwidth(nt, 5)
        log(f"calibrating: FMA peak, {nt} thread(s)")
        # whole-run figure (best of a few runs of ~0.1 s); each GEMM row also
        # carries its own peak, sampled between its timings
        res["peak_gflops"][str(nt)] = max(
            _kernels.fma_peak_gflops(nt, 40_000_000) for _ in range(3))

    log("bf16 GEMM 1024^3, 1 thread")
    pytransformer.set_num_threads(1)
    torch.set_num_threads(1)
    res["bf16"] = bf16_row(1024, 1, max(repeats, 5), rng, torch)
    log("int8 GEMM 1024^3, 1 thread")
    res["int8"] = int8_row(1024, 1, max(repeats, 5), rng, torch)
    if args.bf16_only:
        print_bf16(res["bf16"])
        print()
        print_int8(res["int8"])
        return

    for nt in threads:
        pytransformer.set_num_threads(nt)
        torch.set_num_threads(nt)
        blas_ok = blas.set(nt)
        for n in squares:
            log(f"sgemm square {n}, {nt} thread(s)")
            res["gemm"].append(gemm_row("square", n, n, n, nt,
                                        max(3, repeats // (2 if n >= 2048 else 1)), rng, torch,
                                        blas_ok))
        for M in Ms:
            for K, N in KN:
                log(f"sgemm layer M={M} N={N} K={K}, {nt} thread(s)")
                res["gemm"].append(gemm_row("layer", M, N, K, nt, repeats, rng, torch,
                                            blas_ok, packed_too=True))
        for M, K, N in vocab:
            log(f"sgemm vocab M={M} N={N} K={K}, {nt} thread(s)")
            res["gemm"].append(gemm_row("vocab", M, N, K, nt, repeats, rng, torch,
                                        blas_ok, packed_too=True))
        for op, shape in rowwise:
            log(f"{op} {shape}, {nt} thread(s)")
            res["rowwise"].append(rowwise_row(op, shape, nt, repeats, rng, torch))

    one = [r for r in res["gemm"] if r["name"] == "square" and r["M"] == 1024]
    by_t = {r["threads"]: r for r in one}
    if 1 in by_t and 2 in by_t:
        res["scaling"] = by_t[2]["pt_gflops"] / by_t[1]["pt_gflops"]
        res["scaling_best"] = by_t[2]["pt_gflops_best"] / by_t[1]["pt_gflops_best"]

    res["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    os.makedirs(args.out, exist_ok=True)
    stem = "bench_ops_quick" if args.quick else "bench_ops"
    with open(os.path.join(args.out, stem + ".json"), "w") as f:
        json.dump(res, f, indent=1)
    try:
        plot(res, os.path.join(args.out, stem + ".png"))
    except ImportError:
        log("matplotlib not installed: no plot")
    print_tables(res)
    log(f"wrote {os.path.join(args.out, stem)}.json/.png")


if __name__ == "__main__":
    main()
