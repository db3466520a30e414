"""Translation with a Marian (OPUS-MT) checkpoint: its SentencePiece
tokenizer, the encoder-decoder and greedy or beam search with the KV cache."""
import numpy as np

from ..hub.hf import check_compute_type, from_pretrained, model_directory
from ..hub.marian_tokenizer import MarianTokenizer
from ..models.marian import MarianMTModel
from ..ops.checks import check_int
from .sentence import _as_list

__all__ = ["Translator"]


class Translator:
    """Translation with a Marian checkpoint directory (OPUS-MT): its
    SentencePiece tokenizer (:class:`pytransformer.hub.MarianTokenizer`) and
    its :class:`~pytransformer.models.marian.MarianMTModel`, decoded with the
    KV cache.  ``Translator(path).translate(texts)`` gives what transformers'
    ``tokenizer.batch_decode(model.generate(**tokenizer(texts, padding=True)),
    skip_special_tokens=True)`` gives with the same search settings.
    ``compute_type``: "float32", "bfloat16" or "int8" (see
    :meth:`pytransformer.nn.Module.to`).
    """

    def __init__(self, path, compute_type="float32"):
        check_compute_type(compute_type)
        path = model_directory(path)
        self.path = path
        self.model = from_pretrained(path, compute_type)
        if not isinstance(self.model, MarianMTModel):
            raise ValueError(f"{path}: Translator needs a translation model (model_type "
                             f"marian), got a {type(self.model).__name__}")
        self.tokenizer = tok = MarianTokenizer(path)
        m = self.model
        for side, top, vocab in (("source", tok.max_id(), m.src_vocab_size),
                                 ("target", tok.max_id(target=True), m.tgt_vocab_size)):
            if top >= vocab:
                raise ValueError(f"{path}: the {side} vocabulary has id {top}, the model only "
                                 f"{vocab} {side} embeddings")

    def translate(self, texts, beam_size=4, max_new_tokens=None, length_penalty=1.0,
                  num_hypotheses=1, return_scores=False, batch_size=32, callback=None):
        """Translations of ``texts`` (a list of str; a single str gives a single
        result), in input order.

        beam_size: 1 is greedy search, more is beam search (scores
        sum(log p) / length ** length_penalty); max_new_tokens: tokens per
        translation, eos included (None: the checkpoint's max_length - 1);
        num_hypotheses: the n best of each text, as a list (<= beam_size).
        return_scores: each translation as a (text, score) pair.  Texts are
        sorted by length and translated ``batch_size`` at a time; a text's
        result does not depend on the others.  callback(i, result) is called
        as each text's result is ready.  A text longer (in tokens, eos
        included) than the model's positions is a ValueError naming it.
        """
        single = isinstance(texts, str)
        texts = [texts] if single else _as_list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise ValueError(f"texts[{i}]: a str is needed, got {type(t).__name__}")
        beam_size = check_int(beam_size, "beam_size", 1)
        num_hypotheses = check_int(num_hypotheses, "num_hypotheses", 1, beam_size)
        batch_size = check_int(batch_size, "batch_size", 1)
        limit = self.model.max_len
        encoded = [self.tokenizer.encode(t) for t in texts]
        for i, ids in enumerate(encoded):
            if len(ids) > limit:
                raise ValueError(f"texts[{i}]: {len(ids)} tokens (eos included) are more than "
                                 f"the model's max_position_embeddings={limit}")
        order = np.argsort([-len(e) for e in encoded], kind="stable")
        results = [None] * len(texts)
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            batch = self._translate([encoded[i] for i in idx], beam_size, max_new_tokens,
                                    length_penalty, num_hypotheses, return_scores)
            for i, r in zip(idx.tolist(), batch):
                results[i] = r
                if callback is not None:
                    callback(i, r)
        return results[0] if single else results

    def _translate(self, encoded, beam_size, max_new_tokens, length_penalty, n, with_scores):
        tok = self.tokenizer
        S = max(len(e) for e in encoded)
        ids = np.full((len(encoded), S), tok.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(encoded), S), dtype=np.int64)
        for r, e in enumerate(encoded):
            ids[r, :len(e)], mask[r, :len(e)] = e, 1
        tokens, scores = self.model.generate(
            ids, max_new_tokens=max_new_tokens, method="beam" if beam_size > 1 else "greedy",
            beam_size=beam_size, length_penalty=length_penalty, num_return_sequences=n,
            return_scores=True, attention_mask=mask)
        texts = [tok.decode(row) for row in tokens]
        out = [(t, float(s)) for t, s in zip(texts, scores)] if with_scores else texts
        return [out[k] if n == 1 else out[k:k + n] for k in range(0, len(out), n)]
