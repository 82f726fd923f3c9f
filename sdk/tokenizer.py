"""Tokenizers whose vocabulary travels in the spec: characters learned from the training
text ("char"), or a pretrained BERT vocabulary ("wordpiece", fusionedge.wordpiece)."""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable

import numpy as np

from fusionedge.spec import TextSpec, TokenizerSpec

PAD_ID = 0
UNK_ID = 1


def normalize_text(text: str, lowercase: bool = True) -> str:
    """NFKC-normalises, optionally lower-cases, and collapses runs of white space."""
    text = unicodedata.normalize("NFKC", text)
    if lowercase:
        text = text.lower()
    return " ".join(text.split())


def learn_tokenizer(
    texts: Iterable[str], min_count: int = 1, lowercase: bool = True
) -> TokenizerSpec:
    """Builds a character vocabulary from training text.

    Characters seen fewer than min_count times map to the unknown id, so a stray
    character in one training line does not get an embedding that never trains.
    The order is by frequency, then code point, so the same text gives the same ids.
    """
    counts = Counter(c for t in texts for c in normalize_text(t, lowercase))
    vocab = sorted((c for c, n in counts.items() if n >= min_count), key=lambda c: (-counts[c], c))
    return TokenizerSpec(kind="char", vocab=tuple(vocab), lowercase=lowercase)


def pad_id(spec: TokenizerSpec) -> int:
    """The id that marks padding (and absent text) in the model's `tokens` input."""
    if spec.kind == "char":
        return PAD_ID
    # The last "[PAD]" if a vocabulary repeats it: later duplicates win, as in HF's load_vocab.
    return len(spec.vocab) - 1 - spec.vocab[::-1].index("[PAD]")


class Tokenizer:
    """Turns text into fixed-length int64 token rows as the model's `tokens` input expects.

    Attributes:
        pad_id: The padding id of the spec's tokenizer.
    """

    def __init__(self, spec: TextSpec) -> None:
        self.spec = spec
        self.pad_id = pad_id(spec.tokenizer)
        self._wordpiece = None
        if spec.tokenizer.kind == "wordpiece":
            from fusionedge.wordpiece import WordPieceTokenizer

            self._wordpiece = WordPieceTokenizer(spec.tokenizer, spec.max_length)
            self._ids: dict[str, int] = {}
        else:
            self._ids = {c: i + 2 for i, c in enumerate(spec.tokenizer.vocab)}

    def encode(self, text: str) -> np.ndarray:
        """Returns int64 [max_length]: ids, cut to max_length, then padded.

        "char": one id per character, padded with PAD_ID; "wordpiece": [CLS] pieces
        [SEP], padded with [PAD].
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if self._wordpiece is not None:
            return self._wordpiece.encode(text)
        norm = normalize_text(text, self.spec.tokenizer.lowercase)[: self.spec.max_length]
        out = np.full(self.spec.max_length, PAD_ID, dtype=np.int64)
        out[: len(norm)] = [self._ids.get(c, UNK_ID) for c in norm]
        return out

    def encode_batch(self, texts: Iterable[str]) -> np.ndarray:
        """Returns int64 [N, max_length]."""
        rows = [self.encode(t) for t in texts]
        if not rows:
            return np.zeros((0, self.spec.max_length), dtype=np.int64)
        return np.stack(rows)
