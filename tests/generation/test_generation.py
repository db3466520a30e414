"""Autoregressive decoding (pytransformer.generation, Seq2SeqTransformer.generate)
against references that do not use the KV cache: the torch oracle re-running
the whole model on the growing prefix, and a plain beam search written here."""
import numpy as np
import pytest
import scipy.stats
import torch

from pytransformer import oracle
from pytransformer.models import Seq2SeqTransformer

from conftest import assert_model_close

SRC_V, TGT_V, MAX_LEN = 11, 13, 32
BOS, PAD = 1, 0
OUT = -1  # output padding: not a token id, so generated ids are never mistaken for it
CONFIGS = [
    dict(norm_first=False, activation="relu", positional="sinusoidal", tie_embeddings=False),
    dict(norm_first=True, activation="gelu", positional="learned", tie_embeddings=True),
    dict(norm_first=False, activation="gelu", positional="learned", tie_embeddings=False),
    dict(norm_first=True, activation="relu", positional="sinusoidal", tie_embeddings=True),
]


def make_model(i):
    return Seq2SeqTransformer(SRC_V, TGT_V, d_model=32, nhead=4, num_encoder_layers=2,
                              num_decoder_layers=2, dim_feedforward=64, max_len=MAX_LEN,
                              pad_id=PAD, seed=100 + i, **CONFIGS[i])


def make_src(rng, lengths, width=None):
    """Sources of the given lengths, right-padded with PAD to a common width."""
    width = width or max(lengths)
    src = np.full((len(lengths), width), PAD, dtype=np.int64)
    for r, n in enumerate(lengths):
        src[r, :n] = rng.integers(2, SRC_V, size=n)
    return src


def trim(src_row):
    return src_row[src_row != PAD][None]


def log_softmax(z):
    z = np.asarray(z, dtype=np.float64)
    z = z - z.max()
    return z - np.log(np.exp(z).sum())


class TorchLogits:
    """Next-token logits from the torch twin, re-running the whole model on
    the prefix (no cache): the reference for everything below."""

    def __init__(self, model):
        self.tm = oracle.to_torch(model)

    def __call__(self, src_row, prefix):
        with torch.no_grad():
            out = self.tm(torch.from_numpy(np.asarray(src_row, np.int64)[None]),
                          torch.tensor([list(prefix)], dtype=torch.int64))
        return out[0, -1].numpy()


def torch_greedy(logits_fn, src_row, max_new_tokens, eos_id):
    """A plain greedy loop: the whole prefix through the torch model each step."""
    out = []
    for _ in range(max_new_tokens):
        t = int(np.argmax(logits_fn(src_row, [BOS] + out)))
        out.append(t)
        if t == eos_id:
            break
    return out


def reference_beam(logits_fn, src_row, max_new_tokens, eos_id, K, length_penalty, n):
    """Beam search as documented in pytransformer.generation.beam_search,
    written plainly over lists: returns [(score, tokens)] best first."""
    V = TGT_V
    live = [([], 0.0)]
    finished = []
    for step in range(max_new_tokens):
        cands = []
        for b, (toks, total) in enumerate(live):
            lp = log_softmax(logits_fn(src_row, [BOS] + toks))
            cands += [(total + lp[v], b, v) for v in range(V)]
        cands.sort(key=lambda c: -c[0])  # stable: ties keep (beam, token) order
        new_live = []
        last = step == max_new_tokens - 1
        for rank, (total, b, v) in enumerate(cands[:2 * K]):
            toks = live[b][0] + [v]
            if v == eos_id or last:  # at the last step the first K end as they are
                if rank < K:
                    finished.append((total / len(toks) ** length_penalty, toks))
                continue
            new_live.append((toks, total))
            if len(new_live) == K:
                break
        if len(finished) >= K or last or not new_live:
            break
        live = new_live
    order = sorted(range(len(finished)), key=lambda i: (-finished[i][0], i))
    return [finished[i] for i in order[:n]]


def rows(tokens, eos_id, pad=OUT):
    """Output rows as token lists, checking the padding after each row's end."""
    out = []
    for r in np.asarray(tokens).tolist():
        if eos_id is not None and eos_id in r:
            end = r.index(eos_id) + 1
            assert all(t == pad for t in r[end:]), r
            r = r[:end]
        else:
            while r and r[-1] == pad:
                r = r[:-1]
        out.append(r)
    return out


def likely_eos(logits_fn, src_row, rank=1):
    """A token the model emits early (so that hypotheses end at different steps)."""
    lp = logits_fn(src_row, [BOS])
    return int(np.argsort(-lp, kind="stable")[rank])


# ------------------------------------------------------------- the KV cache --

@pytest.mark.parametrize("i", range(len(CONFIGS)))
def test_cached_steps_equal_the_whole_decoder(i):
    """decode_step logits at position t == the decoder re-run on the prefix
    0..t, by the torch twin (and by pytransformer's own full forward).  A pad
    token inside a prefix is masked as a key in both."""
    model = make_model(i)
    rng = np.random.default_rng(i)
    src = make_src(rng, [7, 3, 5])
    T = 9
    tgt = np.concatenate([np.full((3, 1), BOS), rng.integers(2, TGT_V, size=(3, T - 1))], 1)
    tgt[1, 4] = PAD
    tm = oracle.to_torch(model)
    with torch.no_grad():
        full = tm(torch.from_numpy(src), torch.from_numpy(tgt)).numpy()
    ours_full = model.forward(src, tgt)
    state = model.start_decoding(src, T)
    for t in range(T):
        logits = model.decode_step(tgt[:, t], state)
        assert logits.shape == (3, TGT_V) and logits.dtype == np.float32
        assert_model_close(logits, full[:, t], what=f"config {i}, step {t} vs torch")
        assert_model_close(logits, ours_full[:, t], what=f"config {i}, step {t} vs forward")
    assert state.length == T


def test_cache_is_allocated_once_and_rows_leave_in_place():
    model = make_model(0)
    src = make_src(np.random.default_rng(0), [4, 6, 2, 5])
    state = model.start_decoding(src, 6)
    buffers = [id(a) for a in state._self_k + state._self_v]
    model.decode_step(np.full(4, BOS), state)
    state.select([3, 1])
    logits = model.decode_step(np.array([5, 6]), state)
    assert logits.shape == (2, TGT_V) and state.batch_size == 2
    assert [id(a) for a in state._self_k + state._self_v] == buffers
    # The surviving rows continue exactly as they would have alone.
    alone = model.start_decoding(src[[3]], 6)
    model.decode_step(np.array([BOS]), alone)
    np.testing.assert_array_equal(model.decode_step(np.array([5]), alone)[0], logits[0])
    with pytest.raises(ValueError):
        model.decode_step(np.array([1, 2, 3]), state)


def test_masks_only_where_something_is_padded():
    """Attention takes a mask only when a position is padded -- a source pad
    or a pad token decoded -- and a row's logits are the same either way."""
    model = make_model(0)
    src = make_src(np.random.default_rng(1), [5, 5])
    state = model.start_decoding(src, 4)
    assert state.memory_keep is None and not state.target_padded
    model.decode_step(np.array([BOS, BOS]), state)
    model.decode_step(np.array([7, PAD]), state)       # row 1 decodes a pad
    assert state.target_padded
    with_mask = model.decode_step(np.array([8, 9]), state)
    state.select([0])                                  # the padded row leaves
    assert not state.target_padded
    alone = model.start_decoding(src[[0]], 4)
    for tok in (BOS, 7, 8):
        row = model.decode_step(np.array([tok]), alone)
    np.testing.assert_array_equal(row[0], with_mask[0])
    np.testing.assert_array_equal(model.decode_step(np.array([3]), state),
                                  model.decode_step(np.array([3]), alone))
    padded = model.start_decoding(make_src(np.random.default_rng(1), [5, 3]), 4)
    assert padded.memory_keep is not None


# ------------------------------------------------------------------ greedy --

@pytest.mark.parametrize("i", range(len(CONFIGS)))
def test_greedy_equals_a_torch_loop_without_cache(i):
    model = make_model(i)
    rng = np.random.default_rng(10 + i)
    src = make_src(rng, [6, 2, 8, 4])
    ref = TorchLogits(model)
    eos = likely_eos(ref, trim(src[0])[0])
    tokens, scores = model.generate(src, max_new_tokens=10, bos_id=BOS, eos_id=eos,
                                    pad_id=OUT, return_scores=True)
    assert tokens.dtype == np.int64 and tokens.shape[0] == 4 and scores.shape == (4,)
    got = rows(tokens, eos)
    for r in range(4):
        expected = torch_greedy(ref, trim(src[r])[0], 10, eos)
        assert got[r] == expected, f"config {i}, row {r}"
        lp = sum(log_softmax(ref(trim(src[r])[0], [BOS] + expected[:k]))[t]
                 for k, t in enumerate(expected))
        assert_model_close(scores[r], lp, what=f"config {i}, row {r} score")


def test_eos_none_decodes_exactly_max_new_tokens():
    model = make_model(0)
    src = make_src(np.random.default_rng(1), [5, 3])
    for method in ("greedy", "beam", "sample"):
        out = model.generate(src, max_new_tokens=7, bos_id=BOS, eos_id=None, pad_id=OUT,
                             method=method, beam_size=3, seed=0)
        assert out.shape == (2, 7), method



def test_attention_mask_for_a_model_that_reads_padding_from_pad_id():
    """generate's attention_mask reaches only models whose start_decoding
    takes one (Marian); Seq2SeqTransformer says to pass the sources alone."""
    from pytransformer.generation import generate
    model = make_model(0)
    src = make_src(np.random.default_rng(1), [5, 3])
    with pytest.raises(ValueError, match="attention_mask: Seq2SeqTransformer finds"):
        generate(model, src, 4, bos_id=BOS, eos_id=None, attention_mask=np.ones(src.shape))

def test_rows_end_on_their_own_and_are_padded():
    model = make_model(0)
    src = make_src(np.random.default_rng(2), [5, 3, 7, 2, 6])
    ref = TorchLogits(model)
    # An end token that some rows reach at different steps and others never.
    free = [torch_greedy(ref, trim(r)[0], 8, None) for r in src]
    eos = next(v for v in range(2, TGT_V)
               if len({r.index(v) if v in r else -1 for r in free}) >= 3)
    out = model.generate(src, max_new_tokens=8, bos_id=BOS, eos_id=eos, pad_id=OUT)
    got = rows(out, eos)
    assert out.shape[1] == max(len(r) for r in got)
    for r in range(len(src)):
        assert got[r] == torch_greedy(ref, trim(src[r])[0], 8, eos), f"row {r}"
    assert len({len(r) for r in got}) >= 2


# -------------------------------------------------------------------- beam --

@pytest.mark.parametrize("i,K,lp,n", [(0, 3, 1.0, 3), (1, 2, 0.6, 1), (2, 4, 0.0, 2),
                                      (3, 3, 2.0, 2)])
def test_beam_search_equals_the_reference(i, K, lp, n):
    model = make_model(i)
    rng = np.random.default_rng(20 + i)
    src = make_src(rng, [5, 3, 7])
    ref = TorchLogits(model)
    eos = likely_eos(ref, trim(src[0])[0], rank=1)
    tokens, scores = model.generate(src, max_new_tokens=6, bos_id=BOS, eos_id=eos, pad_id=OUT,
                                    method="beam", beam_size=K, length_penalty=lp,
                                    num_return_sequences=n, return_scores=True)
    assert tokens.shape[0] == 3 * n and scores.shape == (3 * n,)
    got = rows(tokens, eos)
    for b in range(3):
        expected = reference_beam(ref, trim(src[b])[0], 6, eos, K, lp, n)
        assert [t for _, t in expected] == got[b * n:(b + 1) * n], f"source {b}"
        assert_model_close(scores[b * n:(b + 1) * n], np.array([s for s, _ in expected]),
                           what=f"source {b} scores")


def test_beam_size_1_equals_greedy():
    for i in range(len(CONFIGS)):
        model = make_model(i)
        src = make_src(np.random.default_rng(30 + i), [6, 4, 8])
        eos = 3
        g, gs = model.generate(src, 8, BOS, eos, OUT, return_scores=True)
        b, bs = model.generate(src, 8, BOS, eos, OUT, method="beam", beam_size=1,
                               length_penalty=0.0, return_scores=True)
        np.testing.assert_array_equal(b, g)
        np.testing.assert_array_equal(bs, gs)


# ---------------------------------------------------------------- sampling --

def test_sampling_is_reproducible_for_a_seed():
    model = make_model(2)
    src = make_src(np.random.default_rng(3), [6, 4, 8])
    kw = dict(max_new_tokens=8, bos_id=BOS, eos_id=3, pad_id=OUT, method="sample",
              temperature=1.3, top_p=0.9)
    a = model.generate(src, seed=7, **kw)
    b = model.generate(src, seed=7, **kw)
    c = model.generate(src, seed=8, **kw)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    many = model.generate(src, seed=7, num_return_sequences=3, **kw)
    assert many.shape[0] == 9


def test_top_k_1_equals_greedy():
    model = make_model(3)
    src = make_src(np.random.default_rng(4), [6, 4, 8])
    g = model.generate(src, 8, BOS, 3, OUT)
    s = model.generate(src, 8, BOS, 3, OUT, method="sample", top_k=1, temperature=0.7, seed=1)
    np.testing.assert_array_equal(s, g)


def _filtered(logits, temperature, top_k, top_p):
    """The sampling distribution, computed independently: sort, cut, renormalise."""
    p = np.exp(log_softmax(np.asarray(logits, np.float64) / temperature))
    order = sorted(range(len(p)), key=lambda v: (-p[v], v))
    kept = order[:top_k] if top_k else order
    if top_p < 1.0:
        mass, cut = 0.0, []
        for v in kept:
            cut.append(v)
            mass += p[v] / sum(p[u] for u in kept)
            if mass >= top_p:
                break
        kept = cut
    q = np.zeros_like(p)
    q[kept] = p[kept]
    return q / q.sum()


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, None, 1.0), (0.6, None, 1.0),
                                                     (1.5, 6, 1.0), (1.0, None, 0.7)])
def test_one_step_samples_follow_the_distribution(temperature, top_k, top_p):
    """4000 first tokens (4000 samples of one source, each its own stream)
    against softmax(torch logits / temperature), filtered: chi-square goodness
    of fit."""
    model = make_model(0)
    src = make_src(np.random.default_rng(5), [6])
    N = 4000
    out = model.generate(src, max_new_tokens=1, bos_id=BOS, eos_id=None, pad_id=OUT,
                         method="sample", temperature=temperature, top_k=top_k,
                         top_p=top_p, seed=2024, num_return_sequences=N)
    counts = np.bincount(out[:, 0], minlength=TGT_V)
    p = _filtered(TorchLogits(model)(src[0], [BOS]), temperature, top_k, top_p)
    assert counts[p == 0].sum() == 0, "a filtered-out token was drawn"
    support = p > 0
    expected = N * p[support]
    big = expected >= 5  # pool the rare tokens into one bin
    obs = np.append(counts[support][big], counts[support][~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    if len(exp) > 1:
        stat, pvalue = scipy.stats.chisquare(obs, exp)
        assert pvalue > 1e-3, (obs, exp, pvalue)


# ------------------------------------------------------- batch invariance --

@pytest.mark.parametrize("method", ["greedy", "beam", "sample"])
def test_batched_equals_one_by_one_bit_for_bit(method, threads):
    model = make_model(1)
    rng = np.random.default_rng(6)
    src = make_src(rng, [7, 2, 5, 9, 3], width=12)  # extra padding on every row
    ref = TorchLogits(model)
    eos = likely_eos(ref, trim(src[0])[0], rank=1)
    kw = dict(max_new_tokens=8, bos_id=BOS, eos_id=eos, pad_id=OUT, method=method,
              beam_size=3, num_return_sequences=1 if method == "greedy" else 2,
              return_scores=True)
    if method == "sample":
        kw.update(seed=11, temperature=1.5)
    n = kw["num_return_sequences"]
    tokens, scores = model.generate(src, **kw)
    for b in range(len(src)):
        t1, s1 = model.generate(trim(src[b]), **kw)
        width = max(t1.shape[1], tokens.shape[1])
        pad = lambda a: np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=OUT)
        np.testing.assert_array_equal(pad(t1), pad(tokens[b * n:(b + 1) * n]))
        np.testing.assert_array_equal(s1, scores[b * n:(b + 1) * n])


def test_thread_count_does_not_change_decoding():
    import pytransformer
    model = make_model(2)
    src = make_src(np.random.default_rng(7), [7, 2, 5, 9], width=10)
    before = pytransformer.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            pytransformer.set_num_threads(n)
            results.append([model.generate(src, 8, BOS, 3, OUT, method=m, beam_size=3,
                                           seed=5, return_scores=True)
                            for m in ("greedy", "beam", "sample")])
    finally:
        pytransformer.set_num_threads(before)
    for (t1, s1), (t2, s2) in zip(*results):
        np.testing.assert_array_equal(t1, t2)
        np.testing.assert_array_equal(s1, s2)


# -------------------------------------------------------------- bad input --

@pytest.mark.parametrize("src,kw", [
    (np.zeros((1, 0), np.int64), {}),                          # empty source
    (np.array([[PAD, PAD, PAD]]), {}),                         # a row of padding only
    (np.zeros((0, 4), np.int64), {}),                          # no rows
    (np.array([[2, SRC_V]]), {}),                              # id outside the vocabulary
    (np.array([[2, -1]]), {}),
    (np.array([[2.0, 3.0]]), {}),                              # not ids
    (np.array([[2, 3]]), dict(max_new_tokens=0)),
    (np.array([[2, 3]]), dict(max_new_tokens=-2)),
    (np.array([[2, 3]]), dict(max_new_tokens=MAX_LEN + 1)),
    (np.array([[2, 3]]), dict(method="beam", beam_size=0)),
    (np.array([[2, 3]]), dict(method="beam", beam_size=2, num_return_sequences=3)),
    (np.array([[2, 3]]), dict(method="sample", top_p=0.0)),
    (np.array([[2, 3]]), dict(method="sample", top_p=1.5)),
    (np.array([[2, 3]]), dict(method="sample", temperature=0.0)),
    (np.array([[2, 3]]), dict(method="sample", top_k=0)),
    (np.array([[2, 3]]), dict(method="nucleus")),
    (np.array([[2, 3]]), dict(bos_id=TGT_V)),
    (np.array([[2, 3]]), dict(eos_id=-1)),
])
def test_bad_input_raises_value_error(src, kw):
    model = make_model(0)
    args = dict(max_new_tokens=4, bos_id=BOS, eos_id=2, pad_id=OUT)
    args.update(kw)
    with pytest.raises(ValueError):
        model.generate(src, **args)
