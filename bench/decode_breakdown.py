"""Where a decoding step's time goes, at batch 1: the Transformer-base
Seq2SeqTransformer of bench_generate.py (d_model 512, 6+6 layers, d_ff 2048,
32000-token vocabulary) and the shipped demo model, at 1 and 2 threads.

For each model and thread count it prints
  step      -- per-token time of greedy decoding (generate with 2n new tokens
               minus generate with n, over n: the encoder is not counted);
               the fastest of --repeats alternating rounds, like the others;
  GEMVs     -- the step's weight multiplications alone (every packed weight a
               step reads, one row each, called back to back);
  bound     -- the bytes of those weights over the streaming-read bandwidth of
               the same thread count, measured in the same run
               (_kernels.stream_read_gbs on a 256 MiB buffer, the fastest read);
and the step's time beyond streaming its weights, step - bound, as a share
of the step: the overhead (Python composing the kernel calls, argument
checks, attention, norms, the KV cache, the search).  Each model runs twice:
with each decoder layer's step composed in Python, and with the whole stack's
step -- every layer, the final norm and the generator -- as one C call
(_kernels.StackStep over the layers' DecoderLayerStep;
nn.TransformerDecoderLayer.fused_step switches between the two).
The demo model's weights (1.3 MB) stay in cache: its bound is nominal, and
its GEMV column is the one to compare with.

    python bench/decode_breakdown.py [--threads 1,2] [--tokens 32]
"""
import argparse
import os
import platform
import time

from common import cpu_model  # noqa: E402  -- first: the OpenMP wait policy (see common.py)

import numpy as np  # noqa: E402

import pytransformer  # noqa: E402
from pytransformer import _kernels  # noqa: E402
from pytransformer import demo_task as task  # noqa: E402
from pytransformer import nn  # noqa: E402
from pytransformer.models import Seq2SeqTransformer  # noqa: E402

BASE = dict(src_vocab_size=32000, tgt_vocab_size=32000, d_model=512, nhead=8,
            num_encoder_layers=6, num_decoder_layers=6, dim_feedforward=2048, max_len=256)


def step_weights(model):
    """(packed weight, bias) of every multiplication one decoding step makes:
    per decoder layer the fused self-attention Q/K/V, its output projection,
    the cross-attention query and output projections, the two feed-forward
    layers; then the generator."""
    out = []
    for layer in model.transformer.decoder.layers:
        out.append(layer.self_attn._packed("qkv"))
        out.append((layer.self_attn.out_proj._packs["weight"], layer.self_attn.out_proj.bias))
        out.append(layer.multihead_attn._packed("q"))
        out.append((layer.multihead_attn.out_proj._packs["weight"],
                    layer.multihead_attn.out_proj.bias))
        out.append((layer.linear1._packs["weight"], layer.linear1.bias))
        out.append((layer.linear2._packs["weight"], layer.linear2.bias))
    out.append((model.generator._packs["weight"], model.generator.bias))
    return out


def breakdown(name, model, src, bos, eos, pad, n, nt, repeats, stream_buf):
    """Rows for the Python and the C layer step, timed in alternating rounds
    (so that both see the same moments of a shared machine); each figure the
    fastest of its rounds -- what the code costs when it has the core."""
    pytransformer.set_num_threads(nt)

    def gen(k):
        return lambda: model.generate(src, max_new_tokens=k, bos_id=bos, eos_id=eos,
                                      pad_id=pad, method="greedy")
    ws = step_weights(model)
    xs = {w.shape[0]: np.ones((1, w.shape[0]), np.float32) for w, _ in ws}

    def gemvs():
        for w, b in ws:
            w.matmul(xs[w.shape[0]], b)
    # float32 weights: 4 bytes each, and the biases
    nbytes = sum(4 * w.shape[0] * w.shape[1] + (0 if b is None else b.nbytes) for w, b in ws)
    times = {False: ([], []), True: ([], [])}
    g, reads = [], []
    for fused in (False, True):
        nn.TransformerDecoderLayer.fused_step = fused
        gen(n)()   # warm-up; packs the weights
        assert gen(2 * n)().shape[1] >= 2 * n, "the benchmark needs decoding that runs on"
    for _ in range(repeats):
        for fused in (False, True):
            nn.TransformerDecoderLayer.fused_step = fused
            for i, k in enumerate((n, 2 * n)):
                t0 = time.perf_counter()
                gen(k)()
                times[fused][i].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for _ in range(10):
            gemvs()
        g.append((time.perf_counter() - t0) / 10)
        reads.append(_kernels.stream_read_gbs(nt, buffer=stream_buf))
    g, gbs = min(g), max(reads)
    bound = nbytes / gbs * 1e-9
    rows = []
    for fused in (False, True):
        step = (min(times[fused][1]) - min(times[fused][0])) / n
        label = name + (" (C step)" if fused else " (Python)")
        print(f"{label:28s} {nt:3d}  {step * 1e6:8.0f}  {g * 1e6:8.0f}  {bound * 1e6:8.0f}  "
              f"{nbytes / 1e6:7.1f}  {gbs:6.1f}  {nbytes / step * 1e-9:6.1f}  "
              f"{(step - bound) / step * 100:5.0f}%  {(step - g) / step * 100:5.0f}%")
        rows.append(dict(model=name, threads=nt, fused=fused, step_us=step * 1e6,
                         gemv_us=g * 1e6, bound_us=bound * 1e6, weight_mb=nbytes / 1e6,
                         stream_gbs=gbs))
    nn.TransformerDecoderLayer.fused_step = True
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--tokens", type=int, default=32, help="n: steps timed (2n - n)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    print(f"# pytransformer {pytransformer.__version__} ({pytransformer.cpu_info()['isa']}), "
          f"{platform.machine()}, cpu: {cpu_model()}; "
          f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']} "
          f"GOMP_SPINCOUNT={os.environ['GOMP_SPINCOUNT']}")
    print(f"{'model (layer step)':28s} thr  step us  GEMVs us  bound us  weights MB  read GB/s  "
          f"step GB/s  beyond bound  beyond GEMVs")
    stream_buf = np.ones(1 << 26, np.float32)
    rng = np.random.default_rng(1)
    base = Seq2SeqTransformer(**BASE, seed=0)
    src = rng.integers(3, BASE["src_vocab_size"], size=(1, 64))
    demo = Seq2SeqTransformer.load(task.MODEL_PATH)
    dsrc = task.encode_batch([task.sample_pairs(1, seed=0)[0][0]])
    rows = []
    for nt in threads:
        rows += breakdown("transformer-base", base, src, 1, None, 0, args.tokens, nt,
                          args.repeats, stream_buf)
        rows += breakdown("demo", demo, dsrc, task.BOS_ID, None, task.PAD_ID,
                          task.TARGET_LEN // 2, nt, args.repeats, stream_buf)
    return rows


if __name__ == "__main__":
    main()
