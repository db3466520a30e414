"""Marian's tokenizer, as transformers' MarianTokenizer reads a model
directory: SentencePiece models for each side (source.spm, target.spm), the
model's vocabulary (vocab.json, and target_vocab.json when
tokenizer_config.json says ``separate_vocabs``) and the special tokens.

Encoding: the special tokens (``</s>``, ``<unk>``, ``<pad>``) written in the
text are kept whole; each stretch of text between them, after an optional
leading language code (``>>fr<<``), is cut into pieces by the source
SentencePiece model; every piece is looked up in the vocabulary (a piece it
lacks is ``<unk>``: Marian's vocabulary is not numbered as the SentencePiece
model is); ``</s>`` is appended.  Decoding maps ids back to pieces and joins
them with the SentencePiece model, as transformers does.
"""
import os
import re

from .hf import read_json

__all__ = ["MarianTokenizer", "load_marian_tokenizer"]

SPIECE_UNDERLINE = "\u2581"
_CLEANUP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
            (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def _load_spm(file):
    if not os.path.isfile(file):
        raise ValueError(f"{file}: missing (a Marian tokenizer needs source.spm, target.spm "
                         f"and vocab.json)")
    import sentencepiece
    sp = sentencepiece.SentencePieceProcessor()
    try:
        with open(file, "rb") as f:
            sp.LoadFromSerializedProto(f.read())
    except (RuntimeError, OSError) as e:
        raise ValueError(f"{file}: not a SentencePiece model ({str(e)[:200]})") from None
    return sp


def _load_vocab(file):
    if not os.path.isfile(file):
        raise ValueError(f"{file}: missing (a Marian tokenizer needs source.spm, target.spm "
                         f"and vocab.json)")
    vocab = read_json(file, "vocabulary")
    bad = [k for k, v in vocab.items() if isinstance(v, bool) or not isinstance(v, int) or v < 0]
    if bad:
        raise ValueError(f"{file}: token {bad[0]!r} has id {vocab[bad[0]]!r}, not an id >= 0")
    return vocab


class MarianTokenizer:
    """A Marian model directory's tokenizer (see the module's docstring).

    ``encode(text)`` -> source ids ending in ``eos_token_id``;
    ``encode(text, target=True)`` the same with the target side's model and
    vocabulary; ``decode(ids)`` -> text.  ``pad_token_id``, ``eos_token_id``,
    ``unk_token_id`` and ``vocab_size`` are the source vocabulary's.
    """

    def __init__(self, path):
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise ValueError(f"{path}: no such directory (a Marian model directory with "
                             f"source.spm, target.spm and vocab.json is needed)")
        cfg_file = os.path.join(path, "tokenizer_config.json")
        cfg = read_json(cfg_file, "tokenizer config") if os.path.isfile(cfg_file) else {}
        self.path = path
        self.unk_token = str(cfg.get("unk_token", "<unk>"))
        self.eos_token = str(cfg.get("eos_token", "</s>"))
        self.pad_token = str(cfg.get("pad_token", "<pad>"))
        self.separate_vocabs = bool(cfg.get("separate_vocabs", False))
        self.clean_up_tokenization_spaces = bool(cfg.get("clean_up_tokenization_spaces", False))
        self.spm_source = _load_spm(os.path.join(path, "source.spm"))
        self.spm_target = _load_spm(os.path.join(path, "target.spm"))
        vocab_file = os.path.join(path, "vocab.json")
        self.encoder = _load_vocab(vocab_file)
        for name in ("unk_token", "eos_token", "pad_token"):
            if getattr(self, name) not in self.encoder:
                raise ValueError(f"{vocab_file}: has no {name} {getattr(self, name)!r}")
        if self.separate_vocabs:
            self.target_encoder = _load_vocab(os.path.join(path, "target_vocab.json"))
            for tok in (self.unk_token, self.eos_token):
                if tok not in self.target_encoder:
                    raise ValueError(f"{os.path.join(path, 'target_vocab.json')}: has no "
                                     f"{tok!r}")
        else:
            self.target_encoder = self.encoder
        self.decoder = {v: k for k, v in self.target_encoder.items()}
        self.unk_token_id = self.encoder[self.unk_token]
        self.eos_token_id = self.encoder[self.eos_token]
        self.pad_token_id = self.encoder[self.pad_token]
        self.special_tokens = [self.eos_token, self.unk_token, self.pad_token]
        self.special_ids = {self.encoder[t]: t for t in self.special_tokens}
        longest_first = sorted(set(self.special_tokens), key=len, reverse=True)
        self._special_re = re.compile("(" + "|".join(map(re.escape, longest_first)) + ")")

    @property
    def vocab_size(self):
        return len(self.encoder)

    def max_id(self, target=False):
        """The largest id encode (``target`` side) or decode can involve."""
        return max((self.target_encoder if target else self.encoder).values())

    # -- encoding --
    def tokenize(self, text, target=False):
        """The pieces of ``text``: special tokens kept whole, a leading
        language code of each stretch between them kept whole, the rest cut
        by the side's SentencePiece model."""
        if not isinstance(text, str):
            raise ValueError(f"text: a str is needed, got {type(text).__name__}")
        sp = self.spm_target if target else self.spm_source
        pieces = []
        for part in self._special_re.split(text):
            if not part:
                continue
            if part in self.special_tokens:
                pieces.append(part)
                continue
            if part.startswith(">>"):
                end = part.find("<<")
                if end != -1:
                    pieces.append(part[:end + 2])
                    part = part[end + 2:]
            pieces.extend(sp.encode(part, out_type=str))
        return pieces

    def encode(self, text, target=False):
        """Ids of ``text`` followed by eos: source side, or ``target``."""
        vocab = self.target_encoder if target else self.encoder
        special = {t: self.encoder[t] for t in self.special_tokens}
        unk = vocab[self.unk_token]
        ids = [special[p] if p in special else vocab.get(p, unk)
               for p in self.tokenize(text, target)]
        return ids + [self.eos_token_id]

    # -- decoding --
    def convert_ids_to_tokens(self, ids, skip_special_tokens=False):
        sp = self.spm_target if self.separate_vocabs else self.spm_source
        n = sp.get_piece_size()
        out = []
        for i in ids:
            i = int(i)
            if i in self.special_ids:
                if not skip_special_tokens:
                    out.append(self.special_ids[i])
            elif i in self.decoder:
                out.append(self.decoder[i])
            else:  # not in the vocabulary: the SentencePiece model's piece, as transformers
                piece = sp.id_to_piece(i) if 0 <= i < n else ""
                out.append(piece or self.unk_token)
        return out

    def decode(self, ids, skip_special_tokens=True):
        """Text of target ids (the model's output), as transformers'
        ``decode``; ``skip_special_tokens`` drops eos, pad and unk."""
        sp = self.spm_target if self.separate_vocabs else self.spm_source
        specials = set(self.special_tokens)
        out, run = "", []
        for tok in self.convert_ids_to_tokens(ids, skip_special_tokens):
            if tok in specials:
                out += sp.decode_pieces(run) + tok + " "
                run = []
            else:
                run.append(tok)
        out += sp.decode_pieces(run)
        text = out.replace(SPIECE_UNDERLINE, " ").strip()
        if self.clean_up_tokenization_spaces:
            for a, b in _CLEANUP:
                text = text.replace(a, b)
        return text

    def batch_decode(self, rows, skip_special_tokens=True):
        return [self.decode(r, skip_special_tokens) for r in rows]


def load_marian_tokenizer(path):
    """The MarianTokenizer of a model directory; ValueError naming the file
    that is missing or unreadable."""
    return MarianTokenizer(path)
