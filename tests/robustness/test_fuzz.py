"""A short seeded run of the op fuzz (fuzz_ops.py) on every kernel path, and
threads sharing one model: the long fuzz is bench/fuzz.py."""
import os
import sys
import threading

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fuzz_ops  # noqa: E402

import pytransformer  # noqa: E402
from pytransformer.models import Seq2SeqTransformer  # noqa: E402


@pytest.mark.parametrize("block", range(4))
def test_seeded_fuzz_against_torch(block):
    n, misses = fuzz_ops.run(range(block * 100, block * 100 + 100))
    assert n >= 100 and not misses, misses[:10]


def test_threads_sharing_one_model_get_the_bits_of_one_thread():
    m = Seq2SeqTransformer(40, 40, d_model=32, nhead=4, num_encoder_layers=2,
                           num_decoder_layers=2, dim_feedforward=64, seed=0)
    rng = np.random.default_rng(0)
    srcs = [rng.integers(3, 40, size=(int(rng.integers(1, 4)), int(rng.integers(2, 9))))
            for _ in range(12)]
    want = [(m(s, s[:, :5]), m.generate(s, 6, bos_id=1, eos_id=2, method="beam",
                                        beam_size=3)) for s in srcs]
    errors = []

    def worker(k):
        try:
            for r in range(5):
                i = (k + r) % len(srcs)
                logits = m(srcs[i], srcs[i][:, :5])
                toks = m.generate(srcs[i], 6, bos_id=1, eos_id=2, method="beam", beam_size=3)
                if not (np.array_equal(logits, want[i][0]) and
                        np.array_equal(toks, want[i][1])):
                    errors.append((k, i))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    before = pytransformer.get_num_threads()
    pytransformer.set_num_threads(2)
    try:
        ts = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    finally:
        pytransformer.set_num_threads(before)
    assert not errors, errors
