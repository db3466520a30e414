"""A seeded fuzz of every op against torch: random op, shapes (odd sizes,
size-one and empty axes, broadcasting), scales, masks and kernel path.  Used
by tests/robustness/test_fuzz.py (a short seeded run in CI) and by
bench/fuzz.py (as long as asked).

Each case draws its inputs from its own seed, so a failure names the seed
that reproduces it: ``run_case(seed)``.
"""
import numpy as np

from pytransformer import _kernels, ops

OPS = ["matmul", "linear", "softmax", "masked_softmax", "layer_norm", "relu", "gelu",
       "gelu_tanh", "sdpa", "rms_norm", "rope", "silu_and_mul", "silu"]


def _dims(rng, n, lo=0, hi=70):
    """n sizes, mostly small and odd, now and then 0 or 1."""
    out = []
    for _ in range(n):
        r = rng.random()
        out.append(int(rng.integers(0, 2)) if r < 0.08 and lo == 0 else
                   int(rng.integers(max(lo, 1), hi)))
    return out


def _x(rng, shape, scale):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def make_case(seed):
    """(op name, pytransformer thunk, torch thunk, tolerance) for one seed."""
    import torch
    F = torch.nn.functional
    rng = np.random.default_rng(seed)
    op = OPS[int(rng.integers(len(OPS)))]
    scale = float(10 ** rng.uniform(-2, 2))
    t = torch.from_numpy
    if op == "matmul":
        M, K, N = _dims(rng, 3, hi=150)
        batch = tuple(_dims(rng, int(rng.integers(0, 3)), lo=1, hi=4))
        a, b = _x(rng, batch + (M, K), scale), _x(rng, (K, N), 1.0)
        if rng.random() < 0.3:
            b = np.ascontiguousarray(b.T).T        # a transposed view
        tol = 1e-5 * np.sqrt(max(K, 1))       # conftest.matmul_tol, of the output's scale
        return op, lambda: ops.matmul(a, b), lambda: torch.matmul(t(a), t(b.copy())), tol
    if op == "linear":
        M, K, N = _dims(rng, 3, lo=1, hi=150)
        x, w, bias = _x(rng, (M, K), scale), _x(rng, (N, K), 0.1), _x(rng, (N,), 1.0)
        packed = rng.random() < 0.5
        wp = ops.pack_weight(w) if packed else w
        tol = 1e-5 * np.sqrt(K)
        return op, lambda: ops.linear(x, wp, bias), lambda: F.linear(t(x), t(w), t(bias)), tol
    if op in ("softmax", "masked_softmax"):
        shape = tuple(_dims(rng, int(rng.integers(1, 4)), lo=1, hi=90))
        x = _x(rng, shape, scale)
        dim = int(rng.integers(-len(shape), len(shape)))
        if op == "softmax":
            return op, lambda: ops.softmax(x, dim), lambda: torch.softmax(t(x), dim), 1e-5
        keep = rng.random(shape) < 0.7
        def theirs():
            y = torch.softmax(t(x).masked_fill(~t(keep), float("-inf")), dim)
            return torch.nan_to_num(y, nan=0.0)    # fully masked rows: zeros (ours)
        return op, lambda: ops.masked_softmax(x, keep, dim), theirs, 1e-5
    if op == "layer_norm":
        shape = tuple(_dims(rng, int(rng.integers(1, 4)), lo=1, hi=300))
        n = shape[-1]
        offset = float(rng.choice([0.0, 10.0, 1e3]))
        x = _x(rng, shape, scale) + np.float32(offset * scale)
        w, b = _x(rng, (n,), 1.0), _x(rng, (n,), 1.0)
        eps = float(rng.choice([1e-5, 1e-12]))
        return op, lambda: ops.layer_norm(x, (n,), w, b, eps), \
            lambda: F.layer_norm(t(x).double(), (n,), t(w).double(), t(b).double(),
                                 eps).float(), \
            2e-5 * (1 + offset)   # float32 of a row whose mean is offset x its spread
    if op in ("relu", "gelu", "gelu_tanh", "silu"):
        shape = tuple(_dims(rng, int(rng.integers(1, 4)), hi=200))
        x = _x(rng, shape, scale)
        if op == "silu":
            return op, lambda: ops.silu(x), lambda: F.silu(t(x)), 1e-5 * max(scale, 1)
        if op == "relu":
            return op, lambda: ops.relu(x), lambda: F.relu(t(x)), 0.0
        approx = "tanh" if op == "gelu_tanh" else "none"
        return op, lambda: ops.gelu(x, approx), lambda: F.gelu(t(x), approximate=approx), \
            1e-5 * max(scale, 1)
    if op == "rms_norm":
        shape = tuple(_dims(rng, int(rng.integers(1, 4)), lo=1, hi=300))
        n = shape[-1]
        x = _x(rng, shape, scale) + np.float32(float(rng.choice([0.0, 10.0])) * scale)
        w = _x(rng, (n,), 1.0)
        eps = None if rng.random() < 0.5 else float(rng.choice([1e-5, 1e-6]))
        teps = float(np.finfo(np.float32).eps) if eps is None else eps
        return op, lambda: ops.rms_norm(x, (n,), w, eps), \
            lambda: F.rms_norm(t(x).double(), (n,), t(w).double(), teps).float(), 1e-5
    if op == "rope":
        B, T, H = _dims(rng, 3, hi=12)
        D = 2 * int(rng.integers(1, 70))
        x = _x(rng, (B, T, H, D), scale)
        pos = rng.integers(0, int(rng.choice([10, 1000, 40000])), (B, T))
        base = float(rng.choice([10000.0, 100000.0, 500000.0]))
        layout = str(rng.choice(["halves", "pairs"]))
        # torch's float32 frequencies and angles (as transformers), then the
        # rotation in double; ours given the same frequencies
        inv = 1.0 / (base ** (torch.arange(0, D, 2, dtype=torch.float) / D))
        angle = (t(pos).float()[:, :, None, None] * inv).double()     # (B, T, 1, D/2)

        def theirs():
            xd = t(x).double()
            a, b = (xd[..., :D // 2], xd[..., D // 2:]) if layout == "halves" else \
                (xd[..., 0::2], xd[..., 1::2])
            c, s_ = angle.cos(), angle.sin()
            ra, rb = a * c - b * s_, b * c + a * s_
            out = torch.cat((ra, rb), -1) if layout == "halves" else \
                torch.stack((ra, rb), -1).reshape(xd.shape)
            return out.float()
        return op, lambda: ops.rope(x, pos, layout=layout, inv_freq=inv.numpy()), theirs, 1e-6
    if op == "silu_and_mul":
        shape = tuple(_dims(rng, int(rng.integers(0, 3)), lo=1, hi=20)) + \
            (2 * _dims(rng, 1, hi=300)[0],)
        x = _x(rng, shape, scale)
        f = shape[-1] // 2
        return op, lambda: ops.silu_and_mul(x), \
            lambda: (F.silu(t(x[..., :f]).double()) * t(x[..., f:]).double()).float(), 1e-5
    # scaled dot-product attention, with broadcasting masks or is_causal; now
    # and then grouped-query (enable_gqa: the kv heads shared by groups)
    B, h = _dims(rng, 2, lo=1, hi=4)
    L, S = _dims(rng, 2, lo=1, hi=160)
    E, Ev = _dims(rng, 2, lo=1, hi=80)
    group = int(rng.choice([1, 1, 2, 3]))
    q, k, v = _x(rng, (B, h * group, L, E), scale), _x(rng, (B, h, S, E), 1.0), \
        _x(rng, (B, h, S, Ev), 1)
    kind = int(rng.integers(3))
    mask = None
    causal = kind == 1
    if kind == 2:
        mshape = tuple(int(rng.choice([1, d])) for d in (B, h * group, L, S))
        mask = rng.random(mshape) < 0.8

    def ours():
        return ops.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                                enable_gqa=group > 1)

    def theirs():
        m = None if mask is None else t(np.ascontiguousarray(mask))
        y = F.scaled_dot_product_attention(t(q).double(), t(k).double(), t(v).double(),
                                           attn_mask=m, is_causal=causal,
                                           enable_gqa=group > 1)
        return torch.nan_to_num(y, nan=0.0).float()
    # conftest.attention_tol relative to the output's scale (|v| ~ its max)
    score_max = float(np.linalg.norm(q, axis=-1).max() * np.linalg.norm(k, axis=-1).max()
                      / np.sqrt(E)) if q.size and k.size else 1.0
    tol = 1e-6 * (np.sqrt(E) * max(score_max, 1.0) + np.sqrt(S))
    return "sdpa", ours, theirs, tol


def run_case(seed, isa=None):
    """None if the case agrees with torch, else a description of the miss."""
    op, ours, theirs, tol = make_case(seed)
    if isa is not None:
        before = _kernels.get_isa()
        _kernels.set_isa(isa)
    try:
        got = ours()
    finally:
        if isa is not None:
            _kernels.set_isa(before)
    want = theirs().numpy()
    if got.shape != want.shape:
        return f"seed {seed} ({op}, {isa}): shape {got.shape}, torch {want.shape}"
    if got.size == 0:
        return None
    err = np.abs(got.astype(np.float64) - want)
    scale = max(float(np.max(np.abs(want))), 1.0) if op != "layer_norm" else 1.0
    if not np.isfinite(got).all() or float(np.max(err)) > tol * scale:
        return (f"seed {seed} ({op}, {isa}): max |err| {float(np.max(err)):.3g} > "
                f"{tol * scale:.3g}")
    return None


def run(seeds, isas=None):
    """Run the cases of ``seeds`` on each kernel path; returns (count, misses)."""
    isas = isas or _kernels.available_isas()
    misses, n = [], 0
    for seed in seeds:
        for isa in isas:
            n += 1
            miss = run_case(seed, isa)
            if miss:
                misses.append(miss)
    return n, misses
