"""Compact benchmarks run by ``pytransformer bench`` from the installed package.

Kernels (sgemm, softmax, layer_norm) and a small Seq2SeqTransformer (a forward
pass and greedy decoding), each timed beside numpy and, when it is importable,
torch, on the same inputs and thread count, in the same run: warm-up, then the
median of several repeats.  The repository's bench/ directory keeps the full
comparison scripts (peak-FLOP calibration, plots, JSON history).
"""
import json
import sys
import time

import numpy as np

import pytransformer
from pytransformer import ops


def timings(fns, repeats, warmup=1, min_time=0.0, before_round=None, after_call=None):
    """Seconds per call of each candidate, ``repeats`` samples each: the one
    timing helper of ``pytransformer bench`` and the scripts in bench/.

    fns: {name: callable}.  After ``warmup`` calls of each, the candidates
    run in rounds, each taking one sample in turn, so that on a shared
    machine all of them see the same moments and their ratios stay
    meaningful.  A sample calls its candidate as often as it takes to last
    about ``min_time`` seconds (once when min_time is 0) and counts the mean.
    ``before_round()`` runs at the start of each round (a calibration
    sample, say); ``after_call(name)`` after each sample (to let a peer's
    spinning threads park).  Returns {name: [seconds per call, ...]}.
    """
    number = {}
    for name, fn in fns.items():
        for _ in range(warmup):
            fn()
        number[name] = 1
        if min_time:
            t0 = time.perf_counter()
            fn()
            number[name] = max(1, int(min_time / max(time.perf_counter() - t0, 1e-7)))
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        if before_round is not None:
            before_round()
        for name, fn in fns.items():
            n = number[name]
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - t0) / n)
            if after_call is not None:
                after_call(name)
    return samples


def median_time(fn, repeats, warmup=1, min_time=0.0):
    """Median seconds per call of fn() over ``repeats`` samples after
    ``warmup`` calls (see :func:`timings`)."""
    return float(np.median(timings({"f": fn}, repeats, warmup, min_time)["f"]))


class Progress:
    """One status line on stderr: [k/n] what is being timed."""

    def __init__(self, total, stream=sys.stderr):
        self.total, self.done, self.stream = total, 0, stream
        self.tty = hasattr(stream, "isatty") and stream.isatty()

    def step(self, what):
        self.done += 1
        line = f"[{self.done}/{self.total}] {what}"
        if self.tty:
            self.stream.write("\r\033[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self):
        if self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()


# ---------------------------------------------------------------- numpy peers --

def np_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_layer_norm(x, w, b, eps=1e-5):
    mu = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


# ----------------------------------------------------------------- cases --

def kernel_cases(quick):
    """(name, work, unit, {impl: thunk}) for each kernel case."""
    rng = np.random.default_rng(0)
    torch = _torch()
    cases = []
    gemm_sizes = [(1, 512, 2048), (64, 512, 512), (512, 512, 512)] if quick else \
        [(1, 512, 512), (1, 512, 2048), (8, 512, 2048), (64, 512, 512), (256, 1024, 1024),
         (512, 512, 512), (1024, 1024, 1024)]
    for M, K, N in gemm_sizes:
        a = rng.standard_normal((M, K), dtype=np.float32)
        w = rng.standard_normal((N, K), dtype=np.float32)
        packed = ops.pack_weight(w)  # as nn.Linear holds its weight: packed once
        impls = {"pytransformer": lambda a=a, p=packed: ops.linear(a, p),
                 "numpy": lambda a=a, w=w: a @ w.T}
        if torch is not None:
            ta, tw = torch.from_numpy(a), torch.from_numpy(w)
            impls["torch"] = lambda ta=ta, tw=tw: torch.nn.functional.linear(ta, tw)
        cases.append((f"linear M={M} K={K} N={N} (W packed)", 2.0 * M * K * N, "GFLOP/s",
                      impls))

    for rows, cols in ([(512, 512)] if quick else [(512, 64), (512, 512), (4096, 1024)]):
        x = rng.standard_normal((rows, cols), dtype=np.float32)
        impls = {"pytransformer": lambda x=x: ops.softmax(x, dim=-1),
                 "numpy": lambda x=x: np_softmax(x)}
        if torch is not None:
            tx = torch.from_numpy(x)
            impls["torch"] = lambda tx=tx: torch.softmax(tx, dim=-1)
        # Row-wise kernels are memory-bound: work = bytes moved (read x, write y).
        cases.append((f"softmax {rows}x{cols}", 2.0 * x.nbytes, "GB/s", impls))

    for rows, cols in ([(512, 512)] if quick else [(64, 512), (512, 512), (4096, 1024)]):
        x = rng.standard_normal((rows, cols), dtype=np.float32)
        g = rng.standard_normal(cols, dtype=np.float32)
        bb = rng.standard_normal(cols, dtype=np.float32)
        impls = {"pytransformer": lambda x=x, g=g, bb=bb: ops.layer_norm(x, (cols,), g, bb),
                 "numpy": lambda x=x, g=g, bb=bb: np_layer_norm(x, g, bb)}
        if torch is not None:
            tx, tg, tb = (torch.from_numpy(v) for v in (x, g, bb))
            impls["torch"] = lambda tx=tx, tg=tg, tb=tb, cols=cols: \
                torch.nn.functional.layer_norm(tx, (cols,), tg, tb)
        cases.append((f"layer_norm {rows}x{cols}", 2.0 * x.nbytes, "GB/s", impls))
    return cases


def model_cases(quick):
    """A Transformer with a few layers: forward pass, and greedy decoding."""
    from pytransformer.models import Seq2SeqTransformer
    torch = _torch()
    cfg = dict(src_vocab_size=1000, tgt_vocab_size=1000, d_model=256 if quick else 512,
               nhead=4 if quick else 8, num_encoder_layers=2, num_decoder_layers=2,
               dim_feedforward=1024 if quick else 2048, max_len=256, seed=0)
    model = Seq2SeqTransformer(**cfg)
    rng = np.random.default_rng(0)
    B, S, T = (4, 32, 32) if quick else (8, 64, 64)
    src = rng.integers(3, 1000, size=(B, S))
    tgt = rng.integers(3, 1000, size=(B, T))
    desc = (f"d_model={cfg['d_model']} {cfg['num_encoder_layers']}+"
            f"{cfg['num_decoder_layers']} layers")
    cases = []
    impls = {"pytransformer": lambda: model.forward(src, tgt)}
    if torch is not None:
        from pytransformer import oracle
        tm = oracle.to_torch(model).eval()
        ts, tt = torch.from_numpy(src), torch.from_numpy(tgt)

        def torch_forward():
            with torch.inference_mode():
                tm(ts, tt)
        impls["torch"] = torch_forward
    cases.append((f"forward {desc}, B={B} S=T={S}", B * T, "tokens/s", impls))

    n_new = 16 if quick else 32
    gen_src = rng.integers(3, 1000, size=(8, S))
    for bs in (1, 8):
        s = gen_src[:bs]
        impls = {"pytransformer": lambda s=s: model.generate(
            s, max_new_tokens=n_new, bos_id=1, eos_id=None, pad_id=0)}
        cases.append((f"greedy {n_new} tokens {desc}, B={bs}", bs * n_new, "tokens/s", impls))
    return cases


def _torch():
    if _torch.disabled:
        return None
    try:
        import torch
    except ImportError:
        return None
    return torch


_torch.disabled = False


# ----------------------------------------------------------------- tables --

def run_cases(cases, progress, repeats, min_time):
    rows = []
    for name, work, unit, impls in cases:
        row = {"case": name, "unit": unit, "work": work}
        progress.step(f"{name}: {', '.join(impls)}")
        for impl, ts in timings(impls, repeats, warmup=1, min_time=min_time).items():
            row[impl] = float(np.median(ts))
        rows.append(row)
    return rows


def format_table(title, rows, impls):
    head = ["case"] + [f"{i} ms" for i in impls] + [f"{impls[0]} rate"] + \
        [f"vs {i}" for i in impls[1:]]
    body = []
    for r in rows:
        t0 = r.get(impls[0])
        cells = [r["case"]]
        cells += [f"{r[i] * 1e3:.3f}" if i in r else "-" for i in impls]
        if r["unit"] == "GFLOP/s":
            rate = f"{r['work'] / t0 / 1e9:.1f} GFLOP/s"
        elif r["unit"] == "GB/s":
            rate = f"{r['work'] / t0 / 1e9:.1f} GB/s"
        else:
            rate = f"{r['work'] / t0:,.0f} {r['unit']}"
        cells.append(rate)
        cells += [f"{r[i] / t0:.2f}x" if i in r else "-" for i in impls[1:]]
        body.append(cells)
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(head, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).rjust(w) if j else str(c).ljust(w)
                        for j, (c, w) in enumerate(zip(cells, widths))) for cells in body]
    return "\n".join(lines)


def main(quick=False, threads=0, include_torch=True, json_path=None):
    if threads:
        pytransformer.set_num_threads(threads)
    _torch.disabled = not include_torch
    torch = _torch()
    nthreads = pytransformer.get_num_threads()
    if torch is not None:
        torch.set_num_threads(nthreads)
    info = pytransformer.cpu_info()
    print(f"pytransformer {pytransformer.__version__}: kernel path {info['isa']}, "
          f"{nthreads} thread(s); numpy {np.__version__}"
          + (f", torch {torch.__version__}" if torch is not None else ", torch not installed")
          + ("; --quick" if quick else ""))
    print("times: median of repeats after a warm-up; 'vs X' = X's time / pytransformer's "
          "(above 1: pytransformer is faster)\n")
    repeats, min_time = (3, 0.01) if quick else (7, 0.04)   # seconds a sample

    kcases = kernel_cases(quick)
    try:
        mcases = model_cases(quick)
    except ImportError as e:  # a build without the model layer
        mcases = []
        print(f"(model benchmarks skipped: {e})")
    total = len(kcases) + len(mcases)
    progress = Progress(total)
    try:
        krows = run_cases(kcases, progress, repeats, min_time)
        mrows = run_cases(mcases, progress, max(2, repeats // 2), 0.0)
    finally:
        progress.close()
    impls = ["pytransformer", "numpy"] + (["torch"] if torch is not None else [])
    print(format_table("Kernels", krows, impls))
    if mrows:
        print()
        print(format_table("Model", mrows, ["pytransformer"] + (["torch"] if torch else [])))
        print("(greedy: KV-cached decoding, eos_id=None; the repository's "
              "bench/bench_generate.py compares it with a KV-cached torch loop)")
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"cpu_info": info, "threads": nthreads, "quick": quick,
                       "kernels": krows, "model": mrows}, f, indent=1)
        print(f"\nwrote {json_path}")
    return 0
