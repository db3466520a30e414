"""The logits processors (repetition_penalty, no_repeat_ngram_size,
bad_words_ids, min_new_tokens, forced_eos_token_id) against transformers'
own LogitsProcessor classes, one by one and in the order its generate
applies them; then whole encoder-decoder searches with them against a loop
that runs transformers' processors over the torch oracle's logits."""
import numpy as np
import pytest
import torch
from transformers.generation.logits_process import (ForcedEOSTokenLogitsProcessor,
                                                    LogitsProcessorList,
                                                    MinNewTokensLengthLogitsProcessor,
                                                    NoBadWordsLogitsProcessor,
                                                    NoRepeatNGramLogitsProcessor,
                                                    RepetitionPenaltyLogitsProcessor)

from pytransformer.generation import LogitsProcessors, log_softmax

from test_generation import BOS, OUT, TGT_V, TorchLogits, make_model, make_src, rows, trim

V = 17


def theirs(kw, stop_ids, prompt_len, max_length):
    """transformers' processors for the same arguments, in its generate's order."""
    out = LogitsProcessorList()
    if kw.get("repetition_penalty", 1.0) != 1.0:
        out.append(RepetitionPenaltyLogitsProcessor(kw["repetition_penalty"]))
    if kw.get("no_repeat_ngram_size"):
        out.append(NoRepeatNGramLogitsProcessor(kw["no_repeat_ngram_size"]))
    if kw.get("bad_words_ids"):
        out.append(NoBadWordsLogitsProcessor(kw["bad_words_ids"], stop_ids))
    if kw.get("min_new_tokens"):
        out.append(MinNewTokensLengthLogitsProcessor(prompt_len, kw["min_new_tokens"], stop_ids))
    if kw.get("forced_eos_token_id") is not None:
        out.append(ForcedEOSTokenLogitsProcessor(max_length, kw["forced_eos_token_id"]))
    return out


CASES = [
    dict(repetition_penalty=1.3),
    dict(repetition_penalty=0.7),
    dict(no_repeat_ngram_size=1),
    dict(no_repeat_ngram_size=2),
    dict(no_repeat_ngram_size=3),
    dict(bad_words_ids=[[4], [2, 5], [7, 8, 9], [3]]),   # [3] is a stop id: ignored
    dict(min_new_tokens=3),
    dict(forced_eos_token_id=3),
    dict(forced_eos_token_id=[3, 6]),
    dict(repetition_penalty=1.2, no_repeat_ngram_size=2, bad_words_ids=[[1], [5, 5]],
         min_new_tokens=2, forced_eos_token_id=3),
]


@pytest.mark.parametrize("kw", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_processors_equal_transformers(kw, dtype):
    rng = np.random.default_rng(0)
    stop_ids = [3, 6]
    prompt_len, max_new = 4, 6
    changed = 0
    for step in range(max_new):
        hist = rng.integers(0, 10, size=(5, prompt_len + step))   # few ids: repeats
        hist[0, -2:] = [7, 8]      # ends with a bad word's prefix
        hist[1, -1] = 2
        hist[2, :2] = hist[2, -2:]  # the last two tokens were seen before: an n-gram repeats
        scores = rng.standard_normal((5, V)).astype(dtype) * 3
        ours = LogitsProcessors(V, stop_ids, max_new, **kw)(scores, hist.tolist(), step)
        ref = theirs(kw, stop_ids, prompt_len, prompt_len + max_new)(
            torch.from_numpy(hist), torch.from_numpy(scores.copy())).numpy()
        assert ours.dtype == dtype
        changed += not np.array_equal(ours, scores)
        np.testing.assert_array_equal(ours, ref, err_msg=f"{kw} step {step}")
    assert changed, "the case never applied"


def test_processors_leave_their_input_alone_and_check_arguments():
    scores = np.zeros((1, V), np.float32)
    LogitsProcessors(V, [3], 4, repetition_penalty=2.0, min_new_tokens=2)(scores, [[1, 2]], 0)
    assert not scores.any()
    for kw in (dict(repetition_penalty=0.0), dict(repetition_penalty="2"),
               dict(no_repeat_ngram_size=-1), dict(min_new_tokens=1.5),
               dict(bad_words_ids=[[V]]), dict(bad_words_ids=[[]]), dict(bad_words_ids=[]),
               dict(bad_words_ids=[3]), dict(forced_eos_token_id=-1),
               dict(forced_eos_token_id=[])):
        with pytest.raises(ValueError):
            LogitsProcessors(V, [3], 4, **kw)


# -------------------------------------- whole searches, encoder-decoder --

def torch_greedy_processed(ref, src_row, max_new, stop_ids, procs):
    """Greedy decoding of the torch twin without a cache, transformers'
    processors over its logits; input_ids = [bos] + generated, as
    transformers' encoder-decoder generate."""
    ids = [BOS]
    for _ in range(max_new):
        z = torch.from_numpy(ref(src_row, ids)[None].copy())
        z = procs(torch.tensor([ids]), z)
        t = int(torch.argmax(z[0]))
        ids.append(t)
        if t in stop_ids:
            break
    return ids[1:]


GREEDY = [dict(repetition_penalty=1.5), dict(no_repeat_ngram_size=2),
          dict(bad_words_ids=[[0], [5, 6]]), dict(min_new_tokens=4),
          dict(forced_eos_token_id=2),
          dict(repetition_penalty=1.3, no_repeat_ngram_size=3, min_new_tokens=2,
               bad_words_ids=[[0]], forced_eos_token_id=2)]


@pytest.mark.parametrize("kw", GREEDY)
def test_seq2seq_greedy_with_processors_equals_transformers_loop(kw):
    model = make_model(1)
    src = make_src(np.random.default_rng(40), [6, 3, 8, 5])
    ref = TorchLogits(model)
    stop_ids = [2, 4]
    max_new = 9
    out = model.generate(src, max_new, BOS, stop_ids, OUT, **kw)
    for r in range(len(src)):
        procs = theirs(kw, stop_ids, 1, 1 + max_new)
        expected = torch_greedy_processed(ref, trim(src[r])[0], max_new, stop_ids, procs)
        got = [t for t in out[r].tolist() if t != OUT]
        assert got == expected, f"{kw} row {r}"


def reference_beam_processed(ref, src_row, max_new, stop_ids, K, lp, n, procs):
    """transformers' beam search (early_stopping=True) written plainly: the
    processors see each hypothesis' [bos] + tokens and process the
    log-probabilities; 2K candidates a step (one stop id... or more)."""
    width = max(2, 1 + len(stop_ids)) * K
    live, finished = [([], 0.0)], []
    for step in range(max_new):
        cands = []
        for b, (toks, total) in enumerate(live):
            lp_ = torch.from_numpy(log_softmax(ref(src_row, [BOS] + toks))[None].copy())
            lp_ = procs(torch.tensor([[BOS] + toks]), lp_)[0].numpy()
            cands += [(total + lp_[v], b, v) for v in range(TGT_V)]
        cands.sort(key=lambda c: -c[0])
        last = step == max_new - 1
        new_live = []
        for rank, (total, b, v) in enumerate(cands[:width]):
            if total == -np.inf:
                break
            toks = live[b][0] + [v]
            if v in stop_ids or last:
                if rank < K:
                    finished.append((total / len(toks) ** lp, toks))
                continue
            new_live.append((toks, total))
            if len(new_live) == K:
                break
        if len(finished) >= K or last or not new_live:
            break
        live = new_live
    order = sorted(range(len(finished)), key=lambda i: (-finished[i][0], i))
    return [finished[i] for i in order[:n]]


@pytest.mark.parametrize("kw", [dict(repetition_penalty=1.4), dict(no_repeat_ngram_size=2),
                                dict(min_new_tokens=3, bad_words_ids=[[0], [5, 6]]),
                                dict(forced_eos_token_id=2)])
def test_seq2seq_beam_with_processors_equals_reference(kw):
    model = make_model(2)
    src = make_src(np.random.default_rng(41), [5, 7, 3])
    ref = TorchLogits(model)
    stop_ids, K, lp, n, max_new = [2], 3, 0.8, 2, 7
    tokens, scores = model.generate(src, max_new, BOS, stop_ids, OUT, method="beam",
                                    beam_size=K, length_penalty=lp, num_return_sequences=n,
                                    return_scores=True, **kw)
    got = rows(tokens, 2)
    for b in range(len(src)):
        procs = theirs(kw, stop_ids, 1, 1 + max_new)
        expected = reference_beam_processed(ref, trim(src[b])[0], max_new, stop_ids, K, lp, n,
                                            procs)
        assert [t for _, t in expected] == got[b * n:(b + 1) * n], f"{kw} source {b}"
        np.testing.assert_allclose(scores[b * n:(b + 1) * n], [s for s, _ in expected],
                                   rtol=1e-4, atol=1e-5)


def test_sampling_applies_the_processors():
    """Banned tokens are never drawn; forced eos ends every row at the last step."""
    model = make_model(0)
    src = make_src(np.random.default_rng(42), [6, 4])
    out = model.generate(src, 6, BOS, 2, OUT, method="sample", seed=3, temperature=2.0,
                         num_return_sequences=50, bad_words_ids=[[5], [7]],
                         no_repeat_ngram_size=1, forced_eos_token_id=2)
    assert not np.isin(out, [5, 7]).any()
    for r in rows(out, 2):
        assert r[-1] == 2 and len(set(r)) == len(r)


def test_streamer_sees_every_token_in_order():
    model = make_model(0)
    src = make_src(np.random.default_rng(43), [6, 4, 5])
    seen = [[] for _ in range(3)]

    def streamer(rows_, tokens):
        for r, t in zip(rows_.tolist(), tokens.tolist()):
            seen[r].append(t)

    out = model.generate(src, 8, BOS, 3, OUT, streamer=streamer)
    assert seen == [[t for t in r if t != OUT] for r in out.tolist()]
