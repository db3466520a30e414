"""The torch twin of any pytransformer model, to check it against.

``to_torch(model)`` builds the equivalent module out of torch's own classes
(nn.Transformer, nn.MultiheadAttention, nn.Embedding, nn.Linear, ...) with
the same weights, in eval mode; ``compare(model, *inputs)`` runs both on the
same inputs and reports the largest difference.  A shared bug cannot hide:
nothing of pytransformer's computation is reused on the torch side, only its
weights (and its configuration).

torch is imported lazily: pytransformer itself never needs it.
"""
import warnings

import numpy as np

from . import nn
from .ops.checks import to_numpy

__all__ = ["to_torch", "compare"]


def _torch():
    try:
        import torch
    except ImportError as e:
        raise ImportError("pytransformer.oracle needs PyTorch: pip install torch==2.13.0 "
                          "(or install pytransformer with its 'test' extra: "
                          "pip install 'pytransformer[test]')") from e
    return torch


def _load(tm, model):
    torch = _torch()
    sd = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in
          model.state_dict().items()}
    tm.load_state_dict(sd, strict=True)
    return tm.eval()


def _torch_activation(act):
    if isinstance(act, str) and act in ("relu", "gelu"):
        return act
    if act is nn.gelu_tanh:
        return _torch().nn.GELU(approximate="tanh")
    if act in ("silu", "swish") or act is _ops_silu():
        return _torch().nn.functional.silu
    raise ValueError(f"to_torch: activation {act!r} has no torch equivalent here "
                     f"(relu, gelu or silu only)")


def _ops_silu():
    from .ops import silu
    return silu


def _layer_args(layer):
    sa = layer.self_attn
    return dict(d_model=sa.embed_dim, nhead=sa.num_heads,
                dim_feedforward=layer.linear1.out_features, dropout=0.0,
                activation=_torch_activation(layer.activation),
                layer_norm_eps=layer.norm1.eps, batch_first=sa.batch_first,
                norm_first=layer.norm_first, bias=layer.linear1.bias is not None)


def _build(model):
    """A torch module with model's structure (weights not yet loaded)."""
    torch = _torch()
    tnn = torch.nn
    if isinstance(model, nn.Linear):
        return tnn.Linear(model.in_features, model.out_features, bias=model.bias is not None)
    if isinstance(model, nn.LayerNorm):
        return tnn.LayerNorm(model.normalized_shape, eps=model.eps,
                             elementwise_affine=model.elementwise_affine,
                             bias=model.bias is not None)
    if isinstance(model, nn.RMSNorm):
        return tnn.RMSNorm(model.normalized_shape, eps=model.eps,
                           elementwise_affine=model.elementwise_affine)
    if isinstance(model, nn.Embedding):
        return tnn.Embedding(model.num_embeddings, model.embedding_dim,
                             padding_idx=model.padding_idx)
    if isinstance(model, nn.MultiheadAttention):
        return tnn.MultiheadAttention(model.embed_dim, model.num_heads, dropout=0.0,
                                      bias=model.in_proj_bias is not None, kdim=model.kdim,
                                      vdim=model.vdim, batch_first=model.batch_first)
    if isinstance(model, nn.TransformerEncoderLayer):
        return tnn.TransformerEncoderLayer(**_layer_args(model))
    if isinstance(model, nn.TransformerDecoderLayer):
        return tnn.TransformerDecoderLayer(**_layer_args(model))
    if isinstance(model, nn.TransformerEncoder):
        norm = None if model.norm is None else _build(model.norm)
        # No nested tensors: torch would then return zeros at padded positions
        # instead of computing them as pytransformer does.
        return tnn.TransformerEncoder(_build(model.layers[0]), model.num_layers, norm,
                                      enable_nested_tensor=False)
    if isinstance(model, nn.TransformerDecoder):
        norm = None if model.norm is None else _build(model.norm)
        return tnn.TransformerDecoder(_build(model.layers[0]), model.num_layers, norm)
    if isinstance(model, nn.Transformer):
        enc, dec = model.encoder, model.decoder
        t = tnn.Transformer(model.d_model, model.nhead, len(enc.layers), len(dec.layers),
                            custom_encoder=_build(enc), custom_decoder=_build(dec),
                            batch_first=model.batch_first)
        return t
    from .models import Seq2SeqTransformer
    if isinstance(model, Seq2SeqTransformer):
        return _seq2seq_class()(model.config)
    raise TypeError(f"to_torch: no torch equivalent for {type(model).__name__}")


def _seq2seq_class():
    torch = _torch()
    tnn = torch.nn

    class TorchSeq2SeqTransformer(tnn.Module):
        """Seq2SeqTransformer in torch: nn.Embedding x sqrt(d_model) + positions,
        nn.Transformer (batch_first, no dropout), nn.Linear generator."""

        def __init__(self, config):
            super().__init__()
            c = dict(config)
            self.config = c
            d = c["d_model"]
            self.src_embed = tnn.Embedding(c["src_vocab_size"], d)
            self.tgt_embed = tnn.Embedding(c["tgt_vocab_size"], d)
            if c["positional"] == "learned":
                self.pos_embed = tnn.Embedding(c["max_len"], d)
                self.pe = None
            else:
                # The paper's interleaved sinusoids, in float64 then float32.
                pos = torch.arange(c["max_len"], dtype=torch.float64)[:, None]
                two_i = torch.arange(0, d, 2, dtype=torch.float64)
                angle = pos / torch.pow(torch.tensor(10000.0, dtype=torch.float64),
                                        two_i / d)
                pe = torch.zeros(c["max_len"], d, dtype=torch.float64)
                pe[:, 0::2] = torch.sin(angle)
                pe[:, 1::2] = torch.cos(angle[:, : d // 2])
                self.register_buffer("pe", pe.to(torch.float32), persistent=False)
            with warnings.catch_warnings():
                # torch's note that its nested-tensor fast path is off for
                # norm_first; the twin turns that path off anyway (next line)
                warnings.filterwarnings("ignore", "enable_nested_tensor", UserWarning)
                self.transformer = tnn.Transformer(
                    d, c["nhead"], c["num_encoder_layers"], c["num_decoder_layers"],
                    c["dim_feedforward"], dropout=0.0, activation=c["activation"],
                    batch_first=True, norm_first=c["norm_first"])
            self.transformer.encoder.use_nested_tensor = False
            self.generator = tnn.Linear(d, c["tgt_vocab_size"])
            if c["tie_embeddings"]:
                self.generator.weight = self.tgt_embed.weight
            self.scale = float(np.sqrt(d))

        def embed(self, embedding, ids):
            T = ids.shape[1]
            pos = self.pe[:T] if self.pe is not None else self.pos_embed.weight[:T]
            return embedding(ids) * self.scale + pos

        def forward(self, src, tgt):
            pad = self.config["pad_id"]
            T = tgt.shape[1]
            causal = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
            h = self.transformer(self.embed(self.src_embed, src),
                                 self.embed(self.tgt_embed, tgt), tgt_mask=causal,
                                 src_key_padding_mask=src == pad,
                                 tgt_key_padding_mask=tgt == pad,
                                 memory_key_padding_mask=src == pad, tgt_is_causal=True)
            return self.generator(h)

    return TorchSeq2SeqTransformer


def to_torch(model):
    """The torch module equivalent to ``model`` (any pytransformer.nn module or
    a Seq2SeqTransformer), built from torch's classes, with model's weights,
    in eval mode."""
    return _load(_build(model), model)


def _to_torch_value(torch, x):
    if isinstance(x, np.ndarray) or isinstance(x, (list, tuple)) and x and \
            not isinstance(x[0], str):
        a = np.asarray(x)
        if a.dtype.kind == "f":
            return torch.from_numpy(np.array(a, dtype=np.float32))
        if a.dtype.kind in "iu":
            return torch.from_numpy(a.astype(np.int64))
        if a.dtype == np.bool_:
            return torch.from_numpy(a.copy())
    return x


def _flatten(out):
    if isinstance(out, (tuple, list)):
        return [o for x in out for o in _flatten(x)]
    return [out]


def compare(model, *inputs, **kwargs):
    """Run ``model`` and ``to_torch(model)`` on the same inputs.

    Inputs are numpy arrays (or anything the model takes); keyword arguments
    (masks, flags) are passed to both.  Returns a dict: ``max_abs_err`` (the
    largest |pytransformer - torch|), ``max_rel_err`` (that divided by the
    largest |torch output|, the project's whole-model measure), ``shape`` and
    ``torch_shape`` (of the first output), and ``nan_in_torch``: the number of
    torch outputs that are NaN (fully masked rows), compared against
    pytransformer's zeros-or-finite and left out of the errors.
    """
    torch = _torch()
    tm = to_torch(model)
    ours = _flatten(model(*inputs, **kwargs))
    seen = {}  # the same array stays the same tensor (self-attention is query is key)

    def conv(x):
        if id(x) not in seen:
            seen[id(x)] = _to_torch_value(torch, x)
        return seen[id(x)]
    with torch.no_grad():
        theirs = _flatten(tm(*[conv(x) for x in inputs],
                             **{k: conv(v) for k, v in kwargs.items()}))
    if len(ours) != len(theirs):
        raise ValueError(f"compare: {len(ours)} outputs from pytransformer, {len(theirs)} "
                         f"from torch")
    max_abs, scale, nans, shapes = 0.0, 0.0, 0, []
    for a, b in zip(ours, theirs):
        if a is None or b is None:
            if (a is None) != (b is None):
                raise ValueError("compare: one model returned None where the other did not")
            continue
        a = np.asarray(a, dtype=np.float64)
        b = to_numpy(b).astype(np.float64)
        shapes.append((a.shape, b.shape))
        if a.shape != b.shape:
            return {"max_abs_err": float("inf"), "max_rel_err": float("inf"),
                    "shape": a.shape, "torch_shape": b.shape, "nan_in_torch": 0}
        nan = np.isnan(b)
        nans += int(nan.sum())
        ok = ~nan
        if ok.any():
            diff = np.abs(a[ok] - b[ok])
            max_abs = max(max_abs, float(np.nan_to_num(diff, nan=np.inf).max()))
            scale = max(scale, float(np.abs(b[ok]).max()))
    return {"max_abs_err": max_abs, "max_rel_err": max_abs / max(scale, 1e-30),
            "shape": shapes[0][0] if shapes else None,
            "torch_shape": shapes[0][1] if shapes else None, "nan_in_torch": nans}
