"""Logits processing: log-probabilities and the filtered distribution that
sampling draws from (temperature, top-k, nucleus)."""
import numpy as np

__all__ = ["log_softmax", "filter_logits"]


def log_softmax(logits):
    """log softmax over the last axis, in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def filter_logits(logits, temperature=1.0, top_k=None, top_p=1.0):
    """The sampling distribution of each row: softmax(logits / temperature)
    restricted to the top_k most probable tokens, then to the smallest set of
    most probable tokens whose probability reaches top_p (nucleus sampling,
    Holtzman et al. 2020), renormalised.  Returns float64 probabilities."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    V = z.shape[-1]
    if (top_k is None or top_k >= V) and top_p >= 1.0:  # nothing to cut: no sort
        p = np.exp(z - z.max(axis=-1, keepdims=True))
        return p / p.sum(axis=-1, keepdims=True)
    order = np.argsort(-z, axis=-1, kind="stable")  # most probable first, ties by id
    zs = np.take_along_axis(z, order, axis=-1)
    keep = np.ones_like(zs, dtype=bool)
    if top_k is not None and top_k < V:
        keep[..., top_k:] = False
    p = np.exp(zs - zs[..., :1]) * keep
    p /= p.sum(axis=-1, keepdims=True)
    if top_p < 1.0:
        before = np.cumsum(p, axis=-1) - p  # mass of the more probable tokens
        keep &= before < top_p  # the first token is always kept
        p = p * keep
        p /= p.sum(axis=-1, keepdims=True)
    probs = np.zeros_like(p)
    np.put_along_axis(probs, order, p, axis=-1)
    return probs
