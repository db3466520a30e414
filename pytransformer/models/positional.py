"""Positional encodings (section 3.5): the paper's sinusoids, and Marian's
layout of them; learned positions are an nn.Embedding."""
import numpy as np

__all__ = ["sinusoidal_positional_encoding", "marian_positional_encoding"]


def sinusoidal_positional_encoding(max_len, d_model):
    """PE[pos, 2i] = sin(pos / 10000^(2i/d_model)), PE[pos, 2i+1] = cos(same)
    (section 3.5); computed in float64, rounded once to float32."""
    pos = np.arange(max_len, dtype=np.float64)[:, None]
    two_i = np.arange(0, d_model, 2, dtype=np.float64)
    angle = pos / np.power(10000.0, two_i / d_model)
    pe = np.zeros((max_len, d_model), dtype=np.float64)
    pe[:, 0::2] = np.sin(angle)
    pe[:, 1::2] = np.cos(angle[:, : d_model // 2])
    return pe.astype(np.float32)


def marian_positional_encoding(max_len, d_model):
    """The same sinusoids in the layout of Marian (and transformers'
    MarianSinusoidalPositionalEmbedding): not interleaved, the sines in the
    first ceil(d_model/2) columns, the cosines in the rest,
    PE[pos, i] = sin(pos / 10000^(2i/d_model)) and
    PE[pos, ceil(d_model/2) + i] = cos(pos / 10000^(2i/d_model)).
    Computed in float64 as transformers does, rounded once to float32."""
    denom = np.array([np.power(10000, 2 * i / d_model) for i in range((d_model + 1) // 2)],
                     dtype=np.float64)
    angle = np.arange(max_len, dtype=np.float64)[:, None] / denom
    return np.concatenate([np.sin(angle), np.cos(angle[:, :d_model // 2])],
                          axis=1).astype(np.float32)
