"""Whole models, one family per file, each on pytransformer.nn:

- :mod:`.seq2seq`: Seq2SeqTransformer, the paper's Figure 1 model;
- :mod:`.positional`: positional encodings (section 3.5);
- :mod:`.bert`: the BERT family of encoders (bert, roberta, xlm-roberta,
  distilbert), as Hugging Face's transformers defines them;
- :mod:`.gpt2`: GPT-2 (GPT2LMHeadModel), a decoder-only language model;
- :mod:`.marian`: Marian translation models (OPUS-MT), transformers'
  MarianMTModel;
- :mod:`.llama`: Llama-family decoders (LlamaForCausalLM: RMS norm, rotary
  positions, grouped-query attention, SwiGLU), SmolLM2 among them.

Every model that generates text speaks the decoding protocol
(:mod:`pytransformer.generation` documents it): ``start_decoding``,
``decode_step`` and ``state.select``.
"""
from .bert import BertConfig, BertModel
from .gpt2 import GPT2Config, GPT2LMHeadModel
from .llama import LlamaConfig, LlamaForCausalLM
from .marian import MarianConfig, MarianMTModel
from .positional import sinusoidal_positional_encoding
from .seq2seq import Seq2SeqTransformer

__all__ = ["Seq2SeqTransformer", "sinusoidal_positional_encoding", "BertModel", "BertConfig",
           "GPT2LMHeadModel", "GPT2Config", "MarianMTModel", "MarianConfig",
           "LlamaForCausalLM", "LlamaConfig"]
