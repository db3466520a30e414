"""Transformer-base (d_model 512, 8 heads, 6+6 layers, d_ff 2048) on CPU:
pytransformer.nn.Transformer beside torch.nn.Transformer with the same weights
(pytransformer.oracle.to_torch), in the same process, at 1 and 2 threads.

Measured: encoder tokens/s at batch x length 1x128, 8x128 and 1x512, and the
full encoder-decoder forward (causal target mask) in tokens/s of source plus
target; and the encoder at 8x128 on one thread in bfloat16 and in int8
(``model.to(...)``) beside torch under bf16 autocast.  Each figure is the median of several timed calls after warm-up.
Prints a table and writes bench/results/bench_model.json.

    python bench/bench_model.py            # the full run
    python bench/bench_model.py --quick    # fewer shapes and repeats
"""
import json
import os
import platform

import common  # noqa: F401  -- first: the OpenMP wait policy (see common.py)
import numpy as np  # noqa: E402

import torch  # noqa: E402

import pytransformer  # noqa: E402
from pytransformer import nn, oracle  # noqa: E402

from pytransformer.benchmarks import median_time  # noqa: E402

from common import model_bench_args, set_threads  # noqa: E402

BASE = dict(d_model=512, nhead=8, num_encoder_layers=6, num_decoder_layers=6,
            dim_feedforward=2048, batch_first=True)


def main():
    args = model_bench_args(__doc__, "fewer shapes and repeats", "bench_model.json")
    warmup, repeats = (1, 3) if args.quick else (2, 7)
    if args.repeats:
        repeats = args.repeats
    enc_shapes = [(1, 128), (8, 128)] if args.quick else [(1, 128), (8, 128), (1, 512)]
    fwd_shapes = [(8, 128, 128)] if args.quick else [(1, 128, 128), (8, 128, 128)]

    config = dict(BASE, num_encoder_layers=args.layers, num_decoder_layers=args.layers)
    ours = nn.Transformer(**config, rng=np.random.default_rng(0))
    theirs = oracle.to_torch(ours)
    rng = np.random.default_rng(1)
    rows = []
    with torch.inference_mode():
        for threads in args.threads:
            set_threads(threads)
            for B, S in enc_shapes:
                x = rng.standard_normal((B, S, 512)).astype(np.float32)
                xt = torch.from_numpy(x)
                t_ours = median_time(lambda: ours.encoder(x), repeats, warmup)
                t_torch = median_time(lambda: theirs.encoder(xt), repeats, warmup)
                rows.append(dict(what="encoder", batch=B, src_len=S, tgt_len=0,
                                 threads=threads, tokens=B * S, pytransformer_s=t_ours,
                                 torch_s=t_torch))
            for B, S, L in fwd_shapes:
                src = rng.standard_normal((B, S, 512)).astype(np.float32)
                tgt = rng.standard_normal((B, L, 512)).astype(np.float32)
                causal = nn.Transformer.generate_square_subsequent_mask(L)
                st, tt, ct = (torch.from_numpy(a) for a in (src, tgt, causal))
                t_ours = median_time(lambda: ours(src, tgt, tgt_mask=causal,
                                                  tgt_is_causal=True), repeats, warmup)
                t_torch = median_time(lambda: theirs(st, tt, tgt_mask=ct, tgt_is_causal=True),
                                      repeats, warmup)
                rows.append(dict(what="forward", batch=B, src_len=S, tgt_len=L,
                                 threads=threads, tokens=B * (S + L), pytransformer_s=t_ours,
                                 torch_s=t_torch))
        if 1 in args.threads:
            # compute types bfloat16 and int8 beside torch's bf16 autocast (its
            # fastest path on a CPU with AMX or AVX512_BF16), one thread
            set_threads(1)
            B, S = 8, 128
            x = rng.standard_normal((B, S, 512)).astype(np.float32)
            xt = torch.from_numpy(x)

            def torch_bf16():
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return theirs.encoder(xt)
            ref = theirs.encoder(xt).numpy()
            t_torch = median_time(torch_bf16, repeats, warmup)
            err_torch = float(np.abs(torch_bf16().float().numpy() - ref).max())
            for ct, tag in (("bfloat16", "enc-bf16"), ("int8", "enc-int8")):
                ours.to(ct)
                t_ours = median_time(lambda: ours.encoder(x), repeats, warmup)
                err_ours = float(np.abs(ours.encoder(x) - ref).max())
                ours.to("float32")
                rows.append(dict(what=tag, batch=B, src_len=S, tgt_len=0, threads=1,
                                 tokens=B * S, pytransformer_s=t_ours, torch_s=t_torch,
                                 kernel=pytransformer.cpu_info()["compute_paths"][ct],
                                 max_err_vs_fp32_ours=err_ours, max_err_vs_fp32_torch=err_torch))
    for r in rows:
        r["pytransformer_tok_s"] = r["tokens"] / r["pytransformer_s"]
        r["torch_tok_s"] = r["tokens"] / r["torch_s"]
        r["speedup_vs_torch"] = r["torch_s"] / r["pytransformer_s"]

    name = ("Transformer-base" if args.layers == 6
            else f"Transformer-base with {args.layers}+{args.layers} layers")
    print(f"{name}, pytransformer {pytransformer.cpu_info()['isa']} vs torch "
          f"{torch.__version__}; median of {repeats} after {warmup} warm-up")
    head = (f"{'what':8} {'B':>3} {'S':>4} {'T':>4} {'thr':>3} {'pt tok/s':>10} "
            f"{'torch tok/s':>11} {'pt/torch':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['what']:8} {r['batch']:>3} {r['src_len']:>4} {r['tgt_len'] or '':>4} "
              f"{r['threads']:>3} {r['pytransformer_tok_s']:>10.0f} {r['torch_tok_s']:>11.0f} "
              f"{r['speedup_vs_torch']:>8.2f}")
    for r in rows:
        if r["what"] in ("enc-bf16", "enc-int8"):
            f32 = [q for q in rows if q["what"] == "encoder" and q["batch"] == r["batch"]
                   and q["src_len"] == r["src_len"] and q["threads"] == 1]
            ct = "bfloat16" if r["what"] == "enc-bf16" else "int8"
            print(f"{r['what']}: pytransformer {ct} ({r['kernel']}) vs torch bf16 "
                  f"autocast; max |err| vs torch float32: ours {r['max_err_vs_fp32_ours']:.2e}, "
                  f"torch {r['max_err_vs_fp32_torch']:.2e}"
                  + (f"; ours {ct} / ours float32 = "
                     f"{r['pytransformer_tok_s'] / f32[0]['pytransformer_tok_s']:.2f}x"
                     if f32 else ""))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"benchmark": "bench_model", "model": name,
                   "config": config, "quick": args.quick, "warmup": warmup,
                   "repeats": repeats, "cpu_info": pytransformer.cpu_info(),
                   "torch": torch.__version__, "machine": platform.machine(),
                   "processor": platform.processor(), "rows": rows}, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
