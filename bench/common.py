"""What the benchmark scripts share: thread control and their command line.
Timing is pytransformer.benchmarks.timings / median_time, the one helper
`pytransformer bench` uses too.

The scripts import the installed pytransformer (``pip install ".[bench]"``,
or ``pip install -e .`` while developing), never the source tree beside them.

Every script imports this module before numpy, torch or pytransformer: it
sets the OpenMP wait policy they all run under, which each OpenMP runtime
reads once, when it loads.  pytransformer, torch and CTranslate2 each bring
one, and libgomp's default lets idle threads spin for milliseconds: run in
turn, each would hold the cores the next one needs.  Passive waiting alone
(sleep at once) costs a futex wake-up of tens of microseconds at every
parallel region, which on two threads made a decoding step's hundred small
kernels slower than on one.  So idle threads spin briefly (GOMP_SPINCOUNT
20000 pause instructions: well under a millisecond), long enough to catch
the next kernel of a step, then sleep.  Values already in the environment
win.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "passive")
os.environ.setdefault("GOMP_SPINCOUNT", "20000")


def cpu_model():
    """The CPU's model name (/proc/cpuinfo), for the tables' headings."""
    import platform
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def set_threads(n):
    """The same thread count for pytransformer and torch."""
    import pytransformer
    import torch
    pytransformer.set_num_threads(n)
    torch.set_num_threads(n)


def model_bench_args(doc, quick_help, json_name, extra=None):
    """The command line the Transformer-base scripts share: --quick,
    --threads, --repeats, --layers and --out (default bench/results/json_name);
    extra(parser) adds a script's own options."""
    import argparse
    import os
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--layers", type=int, default=6,
                    help="encoder and decoder layers (6 for Transformer-base; fewer only to "
                         "try the script out)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "results", json_name))
    if extra is not None:
        extra(ap)
    return ap.parse_args()


def print_peer_table(title, rows, names, notes=()):
    """The table of a generation benchmark: a row per (what, batch, threads)
    with each engine's tokens/s (row[name + '_tok_s']) and our ratios against
    transformers and, where it ran, CTranslate2 (float32 to float32, and int8
    to int8 where both ran); then the notes."""
    print()
    int8 = "pytransformer int8" in names and "CTranslate2 int8" in names
    head = f"{title:11s} {'batch':>5s} {'thr':>3s} " + \
        " ".join(f"{n + ' tok/s':>20s}" for n in names) + "  ours/transformers  ours/CT2" + \
        ("  int8 ours/CT2" if int8 else "")
    print(head)
    print("-" * len(head))
    for r in rows:
        cells = " ".join(f"{r[n + '_tok_s']:20.1f}" for n in names)
        ratios = f"{r['pytransformer_tok_s'] / r['transformers_tok_s']:17.2f}x"
        if "CTranslate2" in names:
            ratios += f" {r['pytransformer_tok_s'] / r['CTranslate2_tok_s']:9.2f}x"
        if int8:
            ratios += f" {r['pytransformer int8_tok_s'] / r['CTranslate2 int8_tok_s']:14.2f}x"
        print(f"{r['what']:11s} {r['batch']:5d} {r['threads']:3d} {cells}  {ratios}")
    for n in notes:
        print(n)
