"""Per-step time of greedy decoding with the shipped demo model.

The demo model is tiny, so a step's time is mostly the Python around the
kernels (argument checks, the KV cache, the search loop): the figure to watch
when the per-step path changes.  Prints the median and the minimum over
--repeats calls of generate, divided by the steps each call took.

    python bench/demo_step.py [--repeats 200] [--threads 1]

Instructions per step, which a busy machine does not change: --steps K runs
K decoding steps at batch 1 and exits, so that under callgrind the totals of
two runs give the instructions of K2 - K1 steps:

    valgrind --tool=callgrind python bench/demo_step.py --steps 20    # I refs: a
    valgrind --tool=callgrind python bench/demo_step.py --steps 220   # I refs: b
    # (b - a) / 200 instructions a step
"""
import argparse
import statistics
import time

import numpy as np

import pytransformer
from pytransformer import demo_task as task
from pytransformer.models import Seq2SeqTransformer


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=None,
                    help="only run this many decoding steps at batch 1 (for callgrind)")
    args = ap.parse_args()
    pytransformer.set_num_threads(args.threads)
    model = Seq2SeqTransformer.load(task.MODEL_PATH)
    if args.steps is not None:
        src = task.encode_batch([task.sample_pairs(1, seed=0)[0][0]])
        state = model.start_decoding(src, 8)
        tok = np.array([task.BOS_ID])
        for _ in range(3):
            model.decode_step(tok, state)
        for _ in range(args.steps):   # the same position each time: a step's work, K times
            state.length = 5
            model.decode_step(tok, state)
        return
    sources = [s for s, _ in task.sample_pairs(32, seed=0)]
    for B in (1, 32):
        src = task.encode_batch(sources[:B])
        per_step = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = model.generate(src, max_new_tokens=task.TARGET_LEN + 1, bos_id=task.BOS_ID,
                                 eos_id=task.EOS_ID, pad_id=task.PAD_ID, method="greedy")
            per_step.append((time.perf_counter() - t0) / out.shape[1])
        print(f"batch {B:2d}: {statistics.median(per_step) * 1e6:7.0f} us per step (median), "
              f"{min(per_step) * 1e6:7.0f} (min); {out.shape[1]} steps, "
              f"{args.repeats} calls, {args.threads} thread(s)")


if __name__ == "__main__":
    main()
