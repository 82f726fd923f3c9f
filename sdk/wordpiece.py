"""BERT's WordPiece tokenizer in pure Python, for pretrained text encoders.

It reproduces the Hugging Face BERT tokenizer (tokenizers' BertNormalizer,
BertPreTokenizer and WordPiece, which sentence-transformers runs) without depending on
it, so the torch-free runtime tokenises exactly as the encoder was trained:

1. special tokens written literally in the text ("[SEP]") are kept whole;
2. clean: control characters dropped, every white space becomes a space;
3. spaces around CJK ideographs, so each one is a word;
4. with lowercase: accents stripped (NFD, combining marks dropped), then lower case;
5. split on white space and around every punctuation character;
6. each word greedily into the longest vocabulary pieces ("##" marks a continuation);
   a word that cannot be covered, or is over 100 characters, is one [UNK].

Then [CLS] + pieces + [SEP], cut to max_length (keeping [SEP]) and padded with [PAD].
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import numpy as np

from fusionedge.spec import TokenizerSpec

MAX_WORD_CHARS = 100  # BertTokenizer's max_input_chars_per_word
CONTINUATION = "##"
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def read_vocab(path: str | Path, lowercase: bool = True) -> TokenizerSpec:
    """Reads a BERT vocab.txt (one token per line, id = line number) into a spec.

    Raises:
        ValueError: the file is missing or lacks a special token BERT needs.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no vocab.txt; a BERT tokenizer needs its vocabulary file")
    # Only the line break is removed: a token may be white space itself (HF's load_vocab).
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    tokens = tuple(line.rstrip("\r") for line in lines)
    try:
        return TokenizerSpec(kind="wordpiece", vocab=tokens, lowercase=lowercase)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e


def _is_control(c: str) -> bool:
    if c in "\t\n\r":
        return False
    return unicodedata.category(c).startswith("C")


def _is_whitespace(c: str) -> bool:
    return c in " \t\n\r" or unicodedata.category(c) == "Zs"


def _is_punctuation(c: str) -> bool:
    # ASCII symbols such as "$" and "^" are not Unicode punctuation, but BERT splits them.
    cp = ord(c)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(c).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def normalize(text: str, lowercase: bool) -> str:
    """Steps 2-4: clean, space out CJK, strip accents and lower-case (when lowercase)."""
    out = []
    for c in text:
        cp = ord(c)
        if cp == 0 or cp == 0xFFFD or _is_control(c):
            continue
        if _is_whitespace(c):
            out.append(" ")
        elif _is_cjk(cp):
            out.append(f" {c} ")
        else:
            out.append(c)
    text = "".join(out)
    if lowercase:
        text = unicodedata.normalize("NFD", text)
        # Character by character: str.lower() of a whole string turns a word-final sigma
        # into "ς", which BERT's normaliser does not.
        text = "".join(c.lower() for c in text if unicodedata.category(c) != "Mn")
    return text


def split_words(text: str) -> list[str]:
    """Step 5: white space separates words, and each punctuation character is a word."""
    words: list[str] = []
    for chunk in text.split():
        current = ""
        for c in chunk:
            if _is_punctuation(c):
                if current:
                    words.append(current)
                    current = ""
                words.append(c)
            else:
                current += c
        if current:
            words.append(current)
    return words


class WordPieceTokenizer:
    """Text -> int64 [max_length] rows of BERT token ids, as the model's `tokens` input."""

    def __init__(self, spec: TokenizerSpec, max_length: int) -> None:
        if spec.kind != "wordpiece":
            raise ValueError(f"a WordPieceTokenizer needs a wordpiece spec, got {spec.kind!r}")
        if max_length < 3:
            raise ValueError(f"max_length: expected at least 3 ([CLS] x [SEP]), got {max_length}")
        self.lowercase = spec.lowercase
        self.max_length = max_length
        # Later duplicates win, as in Hugging Face's load_vocab.
        self.ids = {token: i for i, token in enumerate(spec.vocab)}
        self.pad_id = self.ids["[PAD]"]
        self.unk_id = self.ids["[UNK]"]
        self.cls_id = self.ids["[CLS]"]
        self.sep_id = self.ids["[SEP]"]
        special = [t for t in SPECIAL_TOKENS if t in self.ids]
        self._special = re.compile("(" + "|".join(re.escape(t) for t in special) + ")")

    def word_ids(self, word: str) -> list[int]:
        """Step 6: greedy longest-match-first pieces of one word."""
        if len(word) > MAX_WORD_CHARS:
            return [self.unk_id]
        out, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else CONTINUATION + word[start:end]
                if piece in self.ids:
                    out.append(self.ids[piece])
                    break
                end -= 1
            else:
                return [self.unk_id]
            start = end
        return out

    def tokenize(self, text: str) -> list[int]:
        """The token ids of text, without [CLS], [SEP], cutting or padding."""
        ids: list[int] = []
        for k, part in enumerate(self._special.split(text)):
            if k % 2:  # a literal special token
                ids.append(self.ids[part])
                continue
            for word in split_words(normalize(part, self.lowercase)):
                ids.extend(self.word_ids(word))
        return ids

    def encode(self, text: str) -> np.ndarray:
        """Returns int64 [max_length]: [CLS] ids [SEP], cut to fit, then [PAD]."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        ids = [self.cls_id, *self.tokenize(text)[: self.max_length - 2], self.sep_id]
        out = np.full(self.max_length, self.pad_id, dtype=np.int64)
        out[: len(ids)] = ids
        return out
