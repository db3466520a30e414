"""The encoder-decoder of section 3: encoder and decoder layers (each
sub-layer wrapped once in "Add & Norm"), their stacks, and Transformer."""
import numpy as np

from .. import _kernels, ops
from ..ops.attention import look_ahead_mask
from .attention import MultiheadAttention, _detect_is_causal_mask
from .cache import KVCache
from .layers import LayerNorm, Linear, resolve_activation, stack_step, torch_activation
from .module import (FUSED_STEP, NO_INIT, Module, ModuleList, _NoInit, _rng, clones, kept_step,
                     xavier_uniform)

__all__ = ["TransformerEncoderLayer", "TransformerDecoderLayer", "TransformerEncoder",
           "TransformerDecoder", "Transformer"]


class _TransformerLayer(Module):
    """What the encoder and decoder layers share: their attention
    sub-layers, the position-wise feed-forward network (section 3.3),
    FFN(x) = act(x W_1 + b_1) W_2 + b_2 with the activation fused into the
    first GEMM, and one LayerNorm per sub-layer for "Add & Norm".  Both take
    torch's constructor arguments."""

    cross_attention = False   # the decoder's second sub-layer

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu",
                 layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True,
                 device=None, dtype=None, *, rng=None):
        super().__init__()
        cross_attention = self.cross_attention
        rng = _rng(rng)
        attention = lambda: MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                               batch_first=batch_first, rng=rng)
        self.self_attn = attention()
        if cross_attention:
            self.multihead_attn = attention()
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, rng=rng)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, rng=rng)
        self.norm_first = bool(norm_first)
        for i in range(3 if cross_attention else 2):
            setattr(self, f"norm{i + 1}", LayerNorm(d_model, eps=layer_norm_eps, bias=bias))
        self.dropout = float(dropout)
        self._set_activation(activation)

    def _set_activation(self, activation):
        self.activation = activation
        self._act_name, self._act_fn = resolve_activation(activation)

    def add_norm(self, x, sublayer, norm):
        """"Add & Norm" (section 3.1) around one sub-layer:
        LayerNorm(x + Sublayer(x)) as in the paper (post-LN), or
        x + Sublayer(LayerNorm(x)) with ``norm_first`` (pre-LN).  The sum is
        written into the sub-layer's output buffer."""
        if self.norm_first:
            y = sublayer(norm(x))
            return np.add(y, x, out=y)
        y = sublayer(x)
        return norm(np.add(y, x, out=y))

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal=False):
        """Self-attention (masked, over the target prefix, in the decoder)."""
        return self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                              need_weights=False, is_causal=is_causal)[0]

    def _ff_block(self, x):
        """The position-wise feed-forward network (section 3.3)."""
        if self._act_fn is None:
            return self.linear2(self.linear1(x, activation=self._act_name))
        return self.linear2(ops.as_float32(self._act_fn(self.linear1(x)), "activation"))

    def _ff_step(self, x):
        """_ff_block for a decoding step's rows (N, d_model), kernel-ready."""
        if self._act_fn is None:
            return self.linear2.step(self.linear1.step(x, self._act_name))
        return self._ff_block(x)

    #: Run each decoding step of this layer as one C call
    #: (_kernels.DecoderLayerStep) where it can: bit for bit the Python
    #: composition of the step (TransformerDecoderLayer.forward_step; GPT-2's
    #: blocks, encoder layers used causally), which stays the reference and
    #: serves what the C step does not (padded targets, activations without a
    #: kernel, weights in GGUF blocks).  PYTRANSFORMER_FUSED_STEP=0 turns it
    #: off for every layer.
    fused_step = FUSED_STEP

    def _step_kernel(self):
        """The layer as one C step, or None where the Python step must run.
        Made once and kept while the weights it holds are the layer's."""
        return kept_step(self)

    def _step_parts(self):
        sa = self.self_attn
        ca = self.multihead_attn if self.cross_attention else None
        norms = (self.norm1, self.norm2, self.norm3) if ca is not None else \
            (self.norm1, self.norm2)
        return sa, ca, norms

    def _step_key(self):
        sa, ca, norms = self._step_parts()
        return (id(sa._packs.get("qkv")), id(sa.out_proj._packs.get("weight")),
                id(sa.out_proj.bias),
                None if ca is None else id(ca._packs.get("q")),
                None if ca is None else id(ca.out_proj._packs.get("weight")),
                None if ca is None else id(ca.out_proj.bias),
                id(self.linear1._packs.get("weight")), id(self.linear1.bias),
                id(self.linear2._packs.get("weight")), id(self.linear2.bias),
                self._act_name, self.norm_first) + \
            tuple(v for n in norms for v in (id(n.weight), id(n.bias), n.eps))

    def _make_step(self):
        sa, ca, norms = self._step_parts()
        if self._act_fn is not None or not sa._qkv_same_embed_dim or \
                (ca is not None and not ca._qkv_same_embed_dim):
            return None
        weights = (sa._packed("qkv"), (sa.out_proj._packs["weight"], sa.out_proj.bias),
                   None if ca is None else ca._packed("q"),
                   None if ca is None else (ca.out_proj._packs["weight"], ca.out_proj.bias),
                   (self.linear1._packs["weight"], self.linear1.bias),
                   (self.linear2._packs["weight"], self.linear2.bias))
        if not all(isinstance(w[0], _kernels.STEP_MATRIX_TYPES) for w in weights
                   if w is not None):
            return None
        return _kernels.DecoderLayerStep(sa.num_heads, self.norm_first, self._act_name,
                                         weights, [(n.weight, n.bias, n.eps) for n in norms])

    @classmethod
    def _from_torch_config(cls, m):
        return cls(m.self_attn.embed_dim, m.self_attn.num_heads, m.linear1.out_features,
                   dropout=m.dropout.p, activation=torch_activation(m),
                   layer_norm_eps=m.norm1.eps, batch_first=m.self_attn.batch_first,
                   norm_first=m.norm_first, bias=m.linear1.bias is not None, rng=NO_INIT)


class TransformerEncoderLayer(_TransformerLayer):
    """One encoder layer (section 3.1): multi-head self-attention, then the
    position-wise feed-forward network, each wrapped in "Add & Norm"."""

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        x = ops.as_float32(src, "src")
        x = self.add_norm(x, lambda h: self._sa_block(h, src_mask, src_key_padding_mask,
                                                      is_causal), self.norm1)
        return self.add_norm(x, self._ff_block, self.norm2)


class TransformerDecoderLayer(_TransformerLayer):
    """One decoder layer (section 3.1): masked multi-head self-attention,
    multi-head attention over the encoder output (keys and values from the
    memory, queries from the decoder, section 3.2.3), then the position-wise
    feed-forward network; each sub-layer with "Add & Norm"."""

    cross_attention = True

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=False, memory_is_causal=False,
                need_weights=False):
        """As torch's.  ``need_weights=True`` (a pytransformer extension)
        returns ``(output, cross_attention_weights)``, the weights (N, L, S)
        averaged over heads: where each target position looked in the source."""
        x = ops.as_float32(tgt, "tgt")
        memory = ops.as_float32(memory, "memory")
        weights = []

        def cross(h):
            out, w = self.multihead_attn(h, memory, memory, attn_mask=memory_mask,
                                         key_padding_mask=memory_key_padding_mask,
                                         need_weights=need_weights, is_causal=memory_is_causal)
            weights.append(w)
            return out

        x = self.add_norm(x, lambda h: self._sa_block(h, tgt_mask, tgt_key_padding_mask,
                                                      tgt_is_causal), self.norm1)
        x = self.add_norm(x, cross, self.norm2)
        x = self.add_norm(x, self._ff_block, self.norm3)
        return (x, weights[0]) if need_weights else x

    def forward_step(self, x, cache, i):
        """One new target position per sequence through this layer (layer ``i``
        of the decoder whose :class:`KVCache` is ``cache``): x (N, E) -> (N, E).
        Equal, row for row, to :meth:`forward` at that position with the
        look-ahead mask."""
        pos = cache.length
        k, v, mk, mv = cache.layer(i)
        if self.fused_step and not cache.target_padded:
            step = self._step_kernel()
            if step is not None:
                return step.step(x, k, v, pos, mk, mv, cache.memory_rows, cache.memory_keep)
        keep = cache.self_keep[:, :pos + 1] if cache.target_padded else None
        mkeep = cache.memory_keep
        x = self.add_norm(x, lambda h: self.self_attn.step_self_attention(h, k, v, pos, keep),
                          self.norm1.step)
        rows = cache.memory_rows
        x = self.add_norm(x, lambda h: self.multihead_attn.step_cross_attention(
            h, mk, mv, mkeep, rows), self.norm2.step)
        return self.add_norm(x, self._ff_step, self.norm3.step)

    def _mha_block(self, x, mem, attn_mask, key_padding_mask, is_causal=False):
        """Encoder-decoder ("cross") attention: queries x, keys and values mem."""
        return self.multihead_attn(x, mem, mem, attn_mask=attn_mask,
                                   key_padding_mask=key_padding_mask, need_weights=False,
                                   is_causal=is_causal)[0]


def _stack_config(m, layer_cls):
    """(layer, num_layers, norm) of a torch TransformerEncoder/Decoder m."""
    norm = None if m.norm is None else LayerNorm._from_torch_config(m.norm)
    return layer_cls._from_torch_config(m.layers[0]), len(m.layers), norm


def _seq_len(x, batch_first):
    x = np.asarray(x)
    if x.ndim == 2:  # unbatched (L, E)
        return x.shape[0]
    return x.shape[1 if batch_first else 0]


class TransformerEncoder(Module):
    """The encoder (section 3.1): a stack of N identical layers, then the
    optional final LayerNorm."""

    def __init__(self, encoder_layer, num_layers, norm=None, enable_nested_tensor=True,
                 mask_check=True):
        super().__init__()
        self.layers = clones(encoder_layer, num_layers, TransformerEncoderLayer,
                              "TransformerEncoder: encoder_layer")
        self.num_layers = int(num_layers)
        self.norm = norm
        self.enable_nested_tensor = enable_nested_tensor
        self.mask_check = mask_check

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal=None):
        x = ops.as_float32(src, "src")
        first = self.layers[0] if len(self.layers) else None
        batch_first = first.self_attn.batch_first if first is not None else False
        is_causal = _detect_is_causal_mask(mask, is_causal, _seq_len(x, batch_first))
        for layer in self.layers:
            x = layer(x, src_mask=mask, is_causal=is_causal,
                      src_key_padding_mask=src_key_padding_mask)
        return x if self.norm is None else self.norm(x)

    @classmethod
    def _from_torch_config(cls, m):
        return cls(*_stack_config(m, TransformerEncoderLayer))


class TransformerDecoder(Module):
    """The decoder (section 3.1): a stack of N identical layers, then the
    optional final LayerNorm."""

    def __init__(self, decoder_layer, num_layers, norm=None):
        super().__init__()
        self.layers = clones(decoder_layer, num_layers, TransformerDecoderLayer,
                              "TransformerDecoder: decoder_layer")
        self.num_layers = int(num_layers)
        self.norm = norm

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=None, memory_is_causal=False,
                need_weights=False):
        """As torch's.  ``need_weights=True`` (a pytransformer extension)
        returns ``(output, weights)``, weights[i] the head-averaged
        cross-attention weights (N, T, S) of layer i."""
        x = ops.as_float32(tgt, "tgt")
        memory = ops.as_float32(memory, "memory")
        first = self.layers[0] if len(self.layers) else None
        batch_first = first.self_attn.batch_first if first is not None else False
        tgt_is_causal = _detect_is_causal_mask(tgt_mask, tgt_is_causal,
                                               _seq_len(x, batch_first))
        weights = []
        for layer in self.layers:
            x = layer(x, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                      tgt_key_padding_mask=tgt_key_padding_mask,
                      memory_key_padding_mask=memory_key_padding_mask,
                      tgt_is_causal=tgt_is_causal, memory_is_causal=memory_is_causal,
                      need_weights=need_weights)
            if need_weights:
                x, w = x
                weights.append(w)
        x = x if self.norm is None else self.norm(x)
        return (x, weights) if need_weights else x

    # -- incremental decoding --
    def init_cache(self, memory, memory_key_padding_mask=None, max_len=1, capacity=None):
        """A :class:`KVCache` for decoding up to ``max_len`` target positions
        against ``memory`` (laid out as this decoder's inputs: (N, S, E) when
        batch_first, else (S, N, E)); memory_key_padding_mask (N, S), True at
        padded source positions; room for ``capacity`` rows (default N).  The
        cross-attention keys and values are computed here, once per source."""
        memory = ops.as_float32(memory, "memory")
        first = self.layers[0] if len(self.layers) else None
        if memory.ndim != 3:
            raise ValueError(f"memory: expected a 3-d (batched) array, got {memory.shape}")
        batch_first = first is None or first.self_attn.batch_first
        N, S = memory.shape[:2] if batch_first else memory.shape[1::-1]
        keep = None
        if memory_key_padding_mask is not None:
            kpm = np.asarray(memory_key_padding_mask)
            if kpm.shape != (N, S) or kpm.dtype != np.bool_:
                raise ValueError(f"memory_key_padding_mask: expected a bool array of shape "
                                 f"{(N, S)}, got {kpm.dtype} {kpm.shape}")
            if kpm.any():  # (no padding: no mask to apply)
                keep = np.ascontiguousarray(~kpm).reshape(N, 1, 1, S)
        cross = [layer.multihead_attn.memory_keys_values(memory) for layer in self.layers]
        heads = [(layer.self_attn.num_heads, layer.self_attn.head_dim) for layer in self.layers]
        return KVCache(N, int(max_len), heads, cross, keep, capacity)

    def forward_step(self, x, cache, tgt_key_padding_mask=None, head=None):
        """One new target position per sequence: x (N, E), the embedded tokens
        at position ``cache.length``, -> (N, E) decoder output (after the final
        norm), or ``head``'s output for it where a head (the Linear to the
        vocabulary) is given; the cache then holds one more position.
        tgt_key_padding_mask (N,) bool: True where this position is padding
        (later positions will not attend to it, as in :meth:`forward`).

        Where every layer has its C step (TransformerDecoderLayer.fused_step)
        and no target position is padded, the whole step -- layers, norm and
        head -- is one C call (nn.stack_step), bit for bit the layer-by-layer
        composition below."""
        x = ops.as_float32(x, "x")
        if x.ndim != 2 or x.shape[0] != cache.batch_size:
            raise ValueError(f"x: expected shape ({cache.batch_size}, E), got {x.shape}")
        if cache.length >= cache.max_len:
            raise ValueError(f"the cache is full: {cache.max_len} positions decoded")
        pad = np.zeros(x.shape[0], bool) if tgt_key_padding_mask is None else \
            np.asarray(tgt_key_padding_mask, dtype=bool).reshape(-1)
        if pad.shape != (x.shape[0],):
            raise ValueError(f"tgt_key_padding_mask: expected shape ({x.shape[0]},), got "
                             f"{np.shape(tgt_key_padding_mask)}")
        cache.self_keep[:, cache.length] = ~pad
        cache.target_padded = cache.target_padded or bool(pad.any())
        norm = self.norm if self.norm is None or isinstance(self.norm, LayerNorm) else False
        stack = None if cache.target_padded or norm is False or not len(self.layers) else \
            stack_step(self, self.layers, norm, head)
        if stack is not None:
            k, v, mk, mv = cache.layers()
            out = stack.step(x, k, v, cache.length, None, mk, mv, cache.memory_rows,
                             cache.memory_keep)
            cache.length += 1
            return out
        for i, layer in enumerate(self.layers):
            x = layer.forward_step(x, cache, i)
        cache.length += 1
        if self.norm is not None:
            x = self.norm.step(x) if isinstance(self.norm, LayerNorm) else self.norm(x)
        return x if head is None else head.step(x)

    @classmethod
    def _from_torch_config(cls, m):
        return cls(*_stack_config(m, TransformerDecoderLayer))


class Transformer(Module):
    """The encoder-decoder Transformer (section 3, Figure 1), as
    torch.nn.Transformer: encoder and decoder stacks, each ending with the
    final LayerNorm torch always adds.  Matrices are initialised with
    Xavier-uniform, as torch does."""

    def __init__(self, d_model=512, nhead=8, num_encoder_layers=6, num_decoder_layers=6,
                 dim_feedforward=2048, dropout=0.1, activation="relu", custom_encoder=None,
                 custom_decoder=None, layer_norm_eps=1e-5, batch_first=False,
                 norm_first=False, bias=True, device=None, dtype=None, *, rng=None):
        super().__init__()
        for name, custom, kind in (("custom_encoder", custom_encoder, TransformerEncoder),
                                   ("custom_decoder", custom_decoder, TransformerDecoder)):
            if custom is not None and not isinstance(custom, kind):
                raise ValueError(f"Transformer: {name} must be a pytransformer.nn."
                                 f"{kind.__name__} (other modules are not supported)")
        rng = _rng(rng)

        def stack(layer_cls, stack_cls, num_layers):  # N layers and the final norm
            layer = layer_cls(d_model, nhead, dim_feedforward, dropout, activation,
                              layer_norm_eps, batch_first, norm_first, bias, rng=NO_INIT)
            return stack_cls(layer, num_layers, LayerNorm(d_model, eps=layer_norm_eps, bias=bias))

        self.encoder = custom_encoder if custom_encoder is not None else \
            stack(TransformerEncoderLayer, TransformerEncoder, num_encoder_layers)
        self.decoder = custom_decoder if custom_decoder is not None else \
            stack(TransformerDecoderLayer, TransformerDecoder, num_decoder_layers)
        self.d_model = int(d_model)
        self.nhead = int(nhead)
        self.batch_first = bool(batch_first)
        if not isinstance(rng, _NoInit):
            self._reset_parameters(rng)

    def _reset_parameters(self, rng):
        """Xavier-uniform for every matrix; torch's own Transformer does this,
        leaving biases as their modules set them."""
        fresh = {k: xavier_uniform(rng, p.shape)
                 for k, p in self.state_dict().items() if p.ndim > 1}
        self._load(fresh, strict=False, copy=False)

    def forward(self, src, tgt, src_mask=None, tgt_mask=None, memory_mask=None,
                src_key_padding_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, src_is_causal=None, tgt_is_causal=None,
                memory_is_causal=False):
        src = ops.as_float32(src, "src")
        tgt = ops.as_float32(tgt, "tgt")
        batch = 0 if self.batch_first else 1
        if src.ndim != tgt.ndim or src.ndim not in (2, 3):
            raise ValueError(f"Transformer: src and tgt must both be 3-d (batched) or 2-d, "
                             f"got {src.shape} and {tgt.shape}")
        if src.ndim == 3 and src.shape[batch] != tgt.shape[batch]:
            raise ValueError(f"Transformer: the batch number of src {src.shape} and tgt "
                             f"{tgt.shape} must be equal")
        if src.shape[-1] != self.d_model or tgt.shape[-1] != self.d_model:
            raise ValueError(f"Transformer: the feature number of src {src.shape} and tgt "
                             f"{tgt.shape} must be equal to d_model={self.d_model}")
        memory = self.encoder(src, mask=src_mask, src_key_padding_mask=src_key_padding_mask,
                              is_causal=src_is_causal)
        return self.decoder(tgt, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                            tgt_key_padding_mask=tgt_key_padding_mask,
                            memory_key_padding_mask=memory_key_padding_mask,
                            tgt_is_causal=tgt_is_causal, memory_is_causal=memory_is_causal)

    @staticmethod
    def generate_square_subsequent_mask(sz, device=None, dtype=None):
        """The look-ahead mask (section 3.2.3): -inf above the diagonal, 0 elsewhere."""
        return np.where(look_ahead_mask(sz), np.float32(0), np.float32(-np.inf))

    @classmethod
    def _from_torch_config(cls, m):
        enc, dec = m.encoder, m.decoder
        if enc.norm is None or dec.norm is None or not len(enc.layers) or not len(dec.layers):
            raise ValueError("from_torch: a Transformer with a custom encoder or decoder "
                             "(no final norm, or no layers) is not supported")
        layer = enc.layers[0]
        # each stack from its own layers: torch's decoder may compute another
        # activation than its encoder (nn.Transformer gives its decoder ReLU
        # when the activation is a GELU module)
        return cls(layer.self_attn.embed_dim, layer.self_attn.num_heads, len(enc.layers),
                   len(dec.layers), layer.linear1.out_features, dropout=layer.dropout.p,
                   activation=torch_activation(layer), layer_norm_eps=layer.norm1.eps,
                   batch_first=layer.self_attn.batch_first, norm_first=layer.norm_first,
                   bias=layer.linear1.bias is not None,
                   custom_encoder=TransformerEncoder._from_torch_config(enc),
                   custom_decoder=TransformerDecoder._from_torch_config(dec), rng=NO_INIT)
