"""The low-precision GEMM rows of bench_ops.py: bf16 and int8 at n^3, each
beside its torch peer and against its own instruction's peak, calibrated
between the timing rounds."""
import numpy as np

from pytransformer import _kernels, ops
from pytransformer.benchmarks import timings


def max_err(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def bf16_row(n, nt, repeats, rng, torch):
    """C = A . W^T at n^3: our bf16 GEMM (packed weight, the bf16 kernel in
    use), our float32 GEMM (packed weight) and torch's bf16 matmul, each
    against its own instruction's peak sampled between the rounds."""
    a = rng.standard_normal((n, n), dtype=np.float32)
    w = rng.standard_normal((n, n), dtype=np.float32) / np.float32(np.sqrt(n))
    ta, tw = torch.from_numpy(a), torch.from_numpy(w)
    ta16, tw16 = ta.bfloat16(), tw.bfloat16()
    p32, p16 = ops.pack_weight(w), ops.pack_weight(w, "bfloat16")
    fns = {"pt_f32": lambda: ops.linear(a, p32), "pt_bf16": lambda: ops.linear(a, p16),
           "torch_bf16": lambda: torch.matmul(ta16, tw16.T)}
    dot = "avx512_bf16" in _kernels.available_bf16_paths()
    amx = _kernels.get_bf16_path() == "amx_bf16"
    peaks = {"fma": [], "dot": [], "amx": []}

    def sample():
        peaks["fma"].append(_kernels.fma_peak_gflops(nt, 2_500_000))
        if dot:
            peaks["dot"].append(_kernels.bf16_dot_peak_gflops(nt, 1_250_000))
        if amx:
            peaks["amx"].append(_kernels.amx_bf16_peak_gflops(nt, 200_000))

    samples = timings(fns, repeats, warmup=1, min_time=0.02, before_round=sample)
    flops = 2.0 * n ** 3
    ref = (ta16.double() @ tw16.double().T).numpy()
    row = {"name": "bf16", "M": n, "N": n, "K": n, "threads": nt,
           "bf16_kernel": _kernels.get_bf16_path(),
           "fma_peak_gflops": float(np.median(peaks["fma"])),
           "dot_peak_gflops": float(np.median(peaks["dot"])) if dot else None,
           "amx_peak_gflops": float(np.median(peaks["amx"])) if amx else None,
           "pt_bf16_err": max_err(ops.linear(a, p16), ref),
           "torch_bf16_err": max_err(torch.matmul(ta16, tw16.T).float(), ref)}
    for k, v in samples.items():
        row[k + "_gflops"] = flops / float(np.median(v)) * 1e-9
    row["pt_f32_frac_peak"] = row["pt_f32_gflops"] / row["fma_peak_gflops"]
    # the peak of the instruction our bf16 kernel runs
    bf16_peak = row["amx_peak_gflops"] or row["dot_peak_gflops"] or row["fma_peak_gflops"]
    row["pt_bf16_frac_peak"] = row["pt_bf16_gflops"] / bf16_peak
    row["torch_bf16_frac_peak"] = row["torch_bf16_gflops"] / bf16_peak
    row["bf16_vs_f32"] = row["pt_bf16_gflops"] / row["pt_f32_gflops"]
    row["bf16_vs_torch_bf16"] = row["pt_bf16_gflops"] / row["torch_bf16_gflops"]
    return row


def print_bf16(r):
    peak = ("TDPBF16PS" if r["amx_peak_gflops"] else "VDPBF16PS" if r["dot_peak_gflops"]
            else "FMA")
    print(f"## bf16 GEMM {r['M']}^3, {r['threads']} thread (kernel {r['bf16_kernel']}; "
          f"peaks sampled between rounds: FMA {r['fma_peak_gflops']:.0f}"
          + (f", VDPBF16PS {r['dot_peak_gflops']:.0f}" if r["dot_peak_gflops"] else "")
          + (f", TDPBF16PS {r['amx_peak_gflops']:.0f}" if r["amx_peak_gflops"] else "")
          + " GFLOP/s)")
    print(f"{'candidate':<24}{'GFLOP/s':>9}{'of peak':>9}  peak")
    print(f"{'pytransformer float32':<24}{r['pt_f32_gflops']:>9.1f}"
          f"{100 * r['pt_f32_frac_peak']:>8.0f}%  FMA")
    print(f"{'pytransformer bfloat16':<24}{r['pt_bf16_gflops']:>9.1f}"
          f"{100 * r['pt_bf16_frac_peak']:>8.0f}%  {peak}")
    print(f"{'torch bfloat16 matmul':<24}{r['torch_bf16_gflops']:>9.1f}"
          f"{100 * r['torch_bf16_frac_peak']:>8.0f}%  {peak}")
    print(f"# bf16 / float32 (ours) = {r['bf16_vs_f32']:.2f}x; ours / torch bf16 = "
          f"{r['bf16_vs_torch_bf16']:.2f}x; max err vs float64 of the bf16 operands: ours "
          f"{r['pt_bf16_err']:.1e}, torch {r['torch_bf16_err']:.1e}")


def int8_row(n, nt, repeats, rng, torch):
    """C = A . W^T at n^3 in int8: our int8 GEMM (packed weight, the int8
    kernel in use: it quantizes A per row in each call), our float32 GEMM,
    and torch._int_mm (int8 x int8 -> int32, operands quantized beforehand:
    the integer product alone), against the int8 instruction's peak."""
    a = rng.standard_normal((n, n), dtype=np.float32)
    w = rng.standard_normal((n, n), dtype=np.float32) / np.float32(np.sqrt(n))
    p32, p8 = ops.pack_weight(w), ops.pack_weight(w, "int8")
    fns = {"pt_f32": lambda: ops.linear(a, p32), "pt_int8": lambda: ops.linear(a, p8)}
    if hasattr(torch, "_int_mm"):
        qa = torch.from_numpy(np.clip(np.round(a * 20), -127, 127).astype(np.int8))
        qw = torch.from_numpy(np.clip(np.round(w * 500), -127, 127).astype(np.int8)).T
        try:
            torch._int_mm(qa, qw)
            fns["torch_int_mm"] = lambda: torch._int_mm(qa, qw)
        except RuntimeError:
            pass
    kernel = _kernels.get_int8_path()
    peak_fn = (_kernels.amx_int8_peak_gops if kernel == "amx_int8" else
               _kernels.vnni_peak_gops if kernel == "avx512_vnni" else None)
    peaks = {"fma": [], "int8": []}

    def sample():
        peaks["fma"].append(_kernels.fma_peak_gflops(nt, 2_500_000))
        if peak_fn:
            peaks["int8"].append(peak_fn(nt, 200_000 if kernel == "amx_int8" else 1_250_000))

    samples = timings(fns, repeats, warmup=1, min_time=0.02, before_round=sample)
    ops_n = 2.0 * n ** 3
    ref = a.astype(np.float64) @ w.astype(np.float64).T
    row = {"name": "int8", "M": n, "N": n, "K": n, "threads": nt, "int8_kernel": kernel,
           "fma_peak_gflops": float(np.median(peaks["fma"])),
           "int8_peak_gops": float(np.median(peaks["int8"])) if peak_fn else None,
           "pt_int8_rel_err": max_err(ops.linear(a, p8), ref) / float(np.abs(ref).max())}
    for k, v in samples.items():
        row[k + "_gops"] = ops_n / float(np.median(v)) * 1e-9
    peak = row["int8_peak_gops"] or row["fma_peak_gflops"]
    row["pt_int8_frac_peak"] = row["pt_int8_gops"] / peak
    row["int8_vs_f32"] = row["pt_int8_gops"] / row["pt_f32_gops"]
    if "torch_int_mm_gops" in row:
        row["torch_int_mm_frac_peak"] = row["torch_int_mm_gops"] / peak
        row["int8_vs_torch_int_mm"] = row["pt_int8_gops"] / row["torch_int_mm_gops"]
    return row


def print_int8(r):
    peak = {"amx_int8": "TDPBSSD", "avx512_vnni": "VPDPBUSD"}.get(r["int8_kernel"], "FMA")
    print(f"## int8 GEMM {r['M']}^3, {r['threads']} thread (kernel {r['int8_kernel']}; "
          f"peaks sampled between rounds: FMA {r['fma_peak_gflops']:.0f} GFLOP/s"
          + (f", {peak} {r['int8_peak_gops']:.0f} GOP/s" if r["int8_peak_gops"] else "") + ")")
    print(f"{'candidate':<24}{'GOP/s':>9}{'of peak':>9}  peak")
    print(f"{'pytransformer float32':<24}{r['pt_f32_gops']:>9.1f}"
          f"{100 * r['pt_f32_gops'] / r['fma_peak_gflops']:>8.0f}%  FMA")
    print(f"{'pytransformer int8':<24}{r['pt_int8_gops']:>9.1f}"
          f"{100 * r['pt_int8_frac_peak']:>8.0f}%  {peak}")
    if "torch_int_mm_gops" in r:
        print(f"{'torch._int_mm':<24}{r['torch_int_mm_gops']:>9.1f}"
              f"{100 * r['torch_int_mm_frac_peak']:>8.0f}%  {peak}")
    print(f"# int8 / float32 (ours) = {r['int8_vs_f32']:.2f}x"
          + (f"; ours / torch._int_mm = {r['int8_vs_torch_int_mm']:.2f}x"
             if "torch_int_mm_gops" in r else "")
          + f"; ours' max error vs float64, relative to max |C|: {r['pt_int8_rel_err']:.1e}")
