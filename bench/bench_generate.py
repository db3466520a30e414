"""Autoregressive decoding of a Transformer-base Seq2SeqTransformer (d_model 512,
8 heads, 6+6 layers, d_ff 2048, 32000-token vocabularies) on CPU:
pytransformer's KV-cached generate beside a KV-cached torch decoding loop over
the same weights (pytransformer.oracle.to_torch), in the same process, at 1
and 2 threads.

Measured: greedy decoding of exactly 64 new tokens (eos_id=None) from a
64-token source at batch 1 and 8, and beam search (beam 4, one source);
tokens/s counts the output tokens (batch x 64; for beam, the 64 tokens of the
returned hypothesis), the time includes encoding the source.  At batch 1
every step reads all the decoder's per-step weights (self-attention Q/K/V/O,
cross-attention Q/O, the feed-forward network, the generator): the table
gives those GB/s as a share of the bound measured in the same run: the
bandwidth of the same number of threads streaming through a 256 MiB buffer
(_kernels.stream_read_gbs).  Both loops are checked
to produce the same greedy tokens.

GPT-2 (bench/gpt2_generate.py): GPT-2 124M continuing a 128-token prompt by
64 tokens, greedy and beam 4 at batch 1 and 8, beside transformers' generate
and CTranslate2 float32 on the same saved directory, interleaved.

Marian (bench/marian_generate.py): a Transformer-base MarianMTModel (OPUS-MT's
shape, 32000-token vocabulary) translating 33-token sources into 64 tokens,
greedy and beam 4 at batch 1 and 8, beside transformers' generate and
CTranslate2 float32 on the same saved directory, interleaved.

Prints tables and writes bench/results/generate.json (and generate_gpt2.json,
generate_marian.json).

    python bench/bench_generate.py                   # every model
    python bench/bench_generate.py --model gpt2      # the GPT-2 rows only
    python bench/bench_generate.py --model marian    # the Marian rows only
    python bench/bench_generate.py --quick         # fewer repeats, 16 new tokens
"""
import json
import os
import platform

import common  # noqa: F401  -- first: the OpenMP wait policy (see common.py)
import numpy as np  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import pytransformer  # noqa: E402
from pytransformer import _kernels, oracle  # noqa: E402
from pytransformer.models import Seq2SeqTransformer  # noqa: E402

from pytransformer.benchmarks import median_time  # noqa: E402

from common import model_bench_args, set_threads  # noqa: E402

BASE = dict(src_vocab_size=32000, tgt_vocab_size=32000, d_model=512, nhead=8,
            num_encoder_layers=6, num_decoder_layers=6, dim_feedforward=2048, max_len=256)
BOS, PAD = 1, 0


def read_bandwidth(threads, buf, samples=5):
    """Bytes per second that `threads` threads read streaming through buf
    (_kernels.stream_read_gbs: each its own contiguous share, as the GEMVs
    of a step split a weight), the median of a few samples: the bound of
    batch-1 decoding, which reads every weight once a step."""
    return float(np.median([_kernels.stream_read_gbs(threads, buffer=buf)
                            for _ in range(samples)])) * 1e9


def step_weight_bytes(cfg, matrix_bytes=4):
    """Bytes of the weights one decoding step reads: per decoder layer
    W^Q,K,V,O of self-attention, W^Q,O of cross-attention (its K, V of the
    memory are cached), W_1, W_2, three layer norms; the final norm and the
    generator.  Matrices at matrix_bytes per weight (4: float32; 1: int8,
    whose scales are 4 bytes per output), everything else float32."""
    d, f, L, V = cfg["d_model"], cfg["dim_feedforward"], cfg["num_decoder_layers"], \
        cfg["tgt_vocab_size"]
    mats = L * (6 * d * d + 2 * d * f) + V * d
    outs = L * (6 * d + f + d) + V                     # one scale (int8) or bias per output
    vecs = L * (4 * d + 2 * d + d + f + 6 * d) + 2 * d + V
    return matrix_bytes * mats + 4 * vecs + (4 * outs if matrix_bytes == 1 else 0)


# ------------------------------------------------------- the torch loop --

class TorchCachedDecoder:
    """A KV-cached decoding loop in torch over the weights of the torch twin:
    F.linear / F.scaled_dot_product_attention / F.layer_norm per step, caches
    preallocated for the maximum length, cross-attention K/V once per source."""

    def __init__(self, tm, cfg):
        self.tm, self.cfg = tm, cfg
        self.h = cfg["nhead"]
        self.d = cfg["d_model"]
        self.layers = list(tm.transformer.decoder.layers)
        assert not cfg.get("norm_first", False)

    def start(self, src, max_len):
        tm, h, d = self.tm, self.h, self.d
        self.kpm = src == PAD
        memory = tm.transformer.encoder(tm.embed(tm.src_embed, src),
                                        src_key_padding_mask=self.kpm)
        B, S = src.shape
        self.keep = (~self.kpm).view(B, 1, 1, S)
        self.cross = []
        for layer in self.layers:
            w, b = layer.multihead_attn.in_proj_weight, layer.multihead_attn.in_proj_bias
            kv = F.linear(memory, w[d:], b[d:]).view(B, S, 2, h, d // h).permute(2, 0, 3, 1, 4)
            self.cross.append((kv[0].contiguous(), kv[1].contiguous()))
        self.k = [torch.zeros(B, h, max_len, d // h) for _ in self.layers]
        self.v = [torch.zeros(B, h, max_len, d // h) for _ in self.layers]
        self.t = 0

    def select(self, rows):
        self.k = [k.index_select(0, rows) for k in self.k]
        self.v = [v.index_select(0, rows) for v in self.v]
        self.cross = [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in self.cross]
        self.keep = self.keep.index_select(0, rows)

    def step(self, tokens):
        tm, h, d, t = self.tm, self.h, self.d, self.t
        N = tokens.shape[0]
        x = tm.tgt_embed(tokens) * tm.scale + tm.pe[t]
        for i, layer in enumerate(self.layers):
            sa = layer.self_attn
            q, k, v = F.linear(x, sa.in_proj_weight, sa.in_proj_bias).view(N, 3, h, d // h) \
                .unbind(1)
            self.k[i][:, :, t] = k
            self.v[i][:, :, t] = v
            o = F.scaled_dot_product_attention(q[:, :, None], self.k[i][:, :, :t + 1],
                                               self.v[i][:, :, :t + 1])
            x = layer.norm1(x + sa.out_proj(o.reshape(N, d)))
            ca = layer.multihead_attn
            q = F.linear(x, ca.in_proj_weight[:d], ca.in_proj_bias[:d]).view(N, h, 1, d // h)
            mk, mv = self.cross[i]
            o = F.scaled_dot_product_attention(q, mk, mv, attn_mask=self.keep)
            x = layer.norm2(x + ca.out_proj(o.reshape(N, d)))
            x = layer.norm3(x + layer.linear2(F.relu(layer.linear1(x))))
        self.t += 1
        return tm.generator(tm.transformer.decoder.norm(x))

    def greedy(self, src, n):
        self.start(src, n)
        tok = torch.full((src.shape[0],), BOS, dtype=torch.long)
        out = []
        for _ in range(n):
            tok = self.step(tok).argmax(-1)
            out.append(tok)
        return torch.stack(out, 1)

    def beam(self, src, n, K):
        """Beam search without an end token (every hypothesis runs n steps)."""
        self.start(src.repeat_interleave(K, 0), n)
        scores = torch.full((K,), float("-inf"), dtype=torch.float64)
        scores[0] = 0
        tok = torch.full((K,), BOS, dtype=torch.long)
        hist = torch.zeros(K, 0, dtype=torch.long)
        for _ in range(n):
            logp = torch.log_softmax(self.step(tok).double(), -1)
            V = logp.shape[-1]
            best, idx = (scores[:, None] + logp).view(-1).topk(K)
            beams, tok = idx // V, idx % V
            self.select(beams)
            hist = torch.cat([hist[beams], tok[:, None]], 1)
            scores = best
        return hist[0]


# ----------------------------------------------------------------- main --

def main():
    args = model_bench_args(__doc__, "fewer repeats, 16 new tokens", "generate.json",
                            extra=lambda ap: ap.add_argument(
                                "--model", choices=["all", "seq2seq", "gpt2", "marian"],
                                default="all"))
    warmup, repeats = (1, 2) if args.quick else (1, 5)
    if args.repeats:
        repeats = args.repeats
    if args.model in ("all", "gpt2"):
        import gpt2_generate
        gpt2_rows = gpt2_generate.run(args.threads, max(repeats - 2, 1) if args.quick else 3,
                                      args.quick)
        out = os.path.join(os.path.dirname(args.out), "generate_gpt2.json")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "w") as f:
            json.dump(dict(cpu_info=pytransformer.cpu_info(), cpu=platform.processor(),
                           torch=torch.__version__, quick=args.quick, rows=gpt2_rows), f, indent=1)
        print(f"wrote {out}\n")
        if args.model == "gpt2":
            return
    if args.model in ("all", "marian"):
        marian_rows(args, repeats)
        if args.model == "marian":
            return
    n_new, S = (16, 64) if args.quick else (64, 64)

    cfg = dict(BASE, num_encoder_layers=args.layers, num_decoder_layers=args.layers)
    model = Seq2SeqTransformer(**cfg, seed=0)
    model8 = Seq2SeqTransformer(**cfg, seed=0).to("int8")
    tm = oracle.to_torch(model)
    tdec = TorchCachedDecoder(tm, cfg)
    rng = np.random.default_rng(1)
    src8 = rng.integers(3, cfg["src_vocab_size"], size=(8, S))
    weight_bytes, weight_bytes8 = step_weight_bytes(cfg), step_weight_bytes(cfg, 1)
    stream_buf = np.ones(1 << 26, np.float32)
    bw = {}
    print(f"pytransformer {pytransformer.__version__} ({pytransformer.cpu_info()['isa']}), "
          f"torch {torch.__version__}; {platform.processor() or platform.machine()}")
    print(f"model: {json.dumps(cfg)}")
    print(f"weights read per decoding step: {weight_bytes / 1e6:.1f} MB\n")

    rows = []
    with torch.inference_mode():
        for threads in args.threads:
            set_threads(threads)
            bw[threads] = read_bandwidth(threads, stream_buf)
            print(f"  streaming read, {threads} thread(s): {bw[threads] / 1e9:.1f} GB/s")
            cases = [("greedy", 1), ("greedy", 8), ("beam4", 1)]
            for what, B in cases:
                src = src8[:B]
                ts = torch.from_numpy(src)
                if what == "greedy":
                    ours = lambda: model.generate(src, n_new, BOS, None, PAD)  # noqa: E731
                    theirs = lambda: tdec.greedy(ts, n_new)  # noqa: E731
                    a, b = ours(), theirs().numpy()
                    same = bool(np.array_equal(a, b))
                else:
                    ours = lambda: model.generate(src, n_new, BOS, None, PAD,  # noqa: E731
                                                  method="beam", beam_size=4)
                    theirs = lambda: tdec.beam(ts, n_new, 4)  # noqa: E731
                    same = None
                t_ours = median_time(ours, repeats, warmup)
                t_torch = median_time(theirs, repeats, warmup)
                tokens = B * n_new
                row = dict(what=what, batch=B, src_len=S, new_tokens=n_new, threads=threads,
                           pytransformer_s=t_ours, torch_s=t_torch,
                           pytransformer_tok_s=tokens / t_ours, torch_tok_s=tokens / t_torch,
                           speedup=t_torch / t_ours, same_tokens=same)
                if what == "greedy" and B == 1:
                    # Steps stream the weights; the encoder pass is a small share here.
                    row["pytransformer_weight_GB_s"] = weight_bytes * n_new / t_ours / 1e9
                    row["torch_weight_GB_s"] = weight_bytes * n_new / t_torch / 1e9
                    # the memory of a shared machine varies: the bound is the
                    # faster of the reads before and after the timing
                    bw[threads] = max(bw[threads], read_bandwidth(threads, stream_buf))
                    row["read_GB_s"] = bw[threads] / 1e9
                    row["pytransformer_frac_bound"] = row["pytransformer_weight_GB_s"] / \
                        row["read_GB_s"]
                if what == "greedy" and B == 1:
                    # the same in int8: its weights' GB/s against the same bandwidth
                    t8 = median_time(lambda: model8.generate(src, n_new, BOS, None, PAD),
                                     repeats, warmup)
                    row["pytransformer_int8_tok_s"] = tokens / t8
                    row["pytransformer_int8_weight_GB_s"] = weight_bytes8 * n_new / t8 / 1e9
                    row["pytransformer_int8_frac_bound"] = \
                        row["pytransformer_int8_weight_GB_s"] / row["read_GB_s"]
                rows.append(row)
                print(f"  {what:6s} B={B} threads={threads}: pytransformer "
                      f"{row['pytransformer_tok_s']:8.1f} tok/s, torch {row['torch_tok_s']:8.1f}"
                      f" tok/s ({row['speedup']:.2f}x)"
                      + ("" if same is None else f", same tokens: {same}"), flush=True)

    print()
    head = (f"{'decoding':8s} {'batch':>5s} {'thr':>3s} {'pytransformer tok/s':>20s} "
            f"{'torch (KV cache) tok/s':>23s} {'speedup':>8s} {'weights GB/s (ours/torch)':>26s}")
    print(head)
    print("-" * len(head))
    for r in rows:
        gbs = (f"{r['pytransformer_weight_GB_s']:.1f} / {r['torch_weight_GB_s']:.1f}"
               if "pytransformer_weight_GB_s" in r else "")
        print(f"{r['what']:8s} {r['batch']:5d} {r['threads']:3d} {r['pytransformer_tok_s']:20.1f} "
              f"{r['torch_tok_s']:23.1f} {r['speedup']:7.2f}x {gbs:>26s}")
    print(f"\nbatch-1 greedy streams {weight_bytes / 1e6:.0f} MB of weights per token "
          f"({weight_bytes8 / 1e6:.0f} MB in int8); the bound is the streaming read of the "
          f"same threads in this run")
    for r in rows:
        if "pytransformer_int8_tok_s" in r:
            print(f"greedy, batch 1, {r['threads']} thread(s): float32 "
                  f"{r['pytransformer_weight_GB_s']:.1f} GB/s of weights = "
                  f"{100 * r['pytransformer_frac_bound']:.0f}% of {r['read_GB_s']:.1f}; int8 "
                  f"{r['pytransformer_int8_tok_s']:.1f} tok/s, "
                  f"{r['pytransformer_int8_weight_GB_s']:.1f} GB/s = "
                  f"{100 * r['pytransformer_int8_frac_bound']:.0f}%")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(dict(config=cfg, cpu_info=pytransformer.cpu_info(),
                       torch=torch.__version__, read_bandwidth_B_s=bw,
                       step_weight_bytes=weight_bytes, quick=args.quick, rows=rows), f, indent=1)
    print(f"wrote {args.out}")


def marian_rows(args, repeats):
    """The Marian table (bench/marian_generate.py), written to generate_marian.json."""
    import marian_generate
    rows = marian_generate.run(args.threads, max(repeats - 2, 1) if args.quick else 3,
                               args.quick)
    out = os.path.join(os.path.dirname(args.out), "generate_marian.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(dict(cpu_info=pytransformer.cpu_info(), cpu=platform.processor(),
                       torch=torch.__version__, quick=args.quick, rows=rows), f, indent=1)
    print(f"wrote {out}\n")
    return rows


if __name__ == "__main__":
    main()
