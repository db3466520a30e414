"""Text in, vectors or text out: the only layer that sees strings.

- :mod:`.sentence`: :class:`SentenceEncoder`, sentence-transformers'
  SentenceTransformer for the checkpoints it saves;
- :mod:`.translator`: :class:`Translator`, translation with a Marian
  (OPUS-MT) model directory;
- :mod:`.generator`: :class:`Generator`, text generation with a decoder-only
  language model (GPT-2).
"""
from .generator import Generator
from .sentence import POOLING_MODES, SentenceEncoder
from .translator import Translator

__all__ = ["SentenceEncoder", "Translator", "Generator", "POOLING_MODES"]
