"""The wordpiece tokenizer: BERT's rules, Hugging Face's ids, and its place in the spec.

tests/assets/bert_reference.json holds the ids that Hugging Face's tokenizer (through
sentence-transformers) gave for all-MiniLM-L6-v2 (scripts/make_bert_reference.py), with
every vocabulary entry those sentences can consult, so the comparison runs without the
90 MB model package.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from support import TINY_BERT_VOCAB, tiny_spec

from fusionedge.spec import ModelSpec, SpecError, TextSpec, TokenizerSpec
from fusionedge.tokenizer import PAD_ID, Tokenizer, pad_id
from fusionedge.wordpiece import WordPieceTokenizer, normalize, read_vocab, split_words

REFERENCE = json.loads((Path(__file__).parents[1] / "assets" / "bert_reference.json").read_text())
TINY = TokenizerSpec(kind="wordpiece", vocab=TINY_BERT_VOCAB)


def pieces(text: str, max_length: int = 16) -> list[str]:
    """The tokens of text as strings, padding dropped."""
    ids = WordPieceTokenizer(TINY, max_length).encode(text)
    return [TINY.vocab[i] for i in ids if i != 0]


def reference_spec(reference: dict) -> TokenizerSpec:
    """A vocabulary of the reference's size with its recorded entries at their ids; every
    other id holds a token no text can produce (clean-up drops NUL characters)."""
    vocab = [f"\0{i}" for i in range(reference["vocab_size"])]
    for token, i in reference["vocab_subset"].items():
        vocab[i] = token
    return TokenizerSpec(kind="wordpiece", vocab=tuple(vocab), lowercase=True)


def test_ids_match_hugging_face_for_all_minilm() -> None:
    ref = REFERENCE["minilm"]
    tokenizer = WordPieceTokenizer(reference_spec(ref), ref["max_length"])
    for sentence, expected in zip(ref["sentences"], ref["ids"], strict=True):
        assert tokenizer.encode(sentence).tolist() == expected, sentence


def test_ids_match_hugging_face_for_the_tiny_folder() -> None:
    ref = REFERENCE["tiny"]
    tokenizer = WordPieceTokenizer(TINY, ref["max_length"])
    for sentence, expected in zip(ref["sentences"], ref["ids"], strict=True):
        assert tokenizer.encode(sentence).tolist() == expected, sentence


def test_bert_rules() -> None:
    assert pieces("Red!") == ["[CLS]", "red", "!", "[SEP]"]
    assert pieces("reds") == ["[CLS]", "red", "##s", "[SEP]"]
    assert pieces("it's") == ["[CLS]", "it", "'", "s", "[SEP]"]
    assert pieces("  GREEN\tblue\n") == ["[CLS]", "green", "blue", "[SEP]"]
    assert pieces("ré") == ["[CLS]", "r", "##e", "[SEP]"]  # accent stripped
    assert pieces("red§") == ["[CLS]", "red", "[UNK]", "[SEP]"]  # § is punctuation
    assert pieces("ßred") == ["[CLS]", "[UNK]", "[SEP]"]  # a word that cannot be covered
    assert pieces("a" * 101) == ["[CLS]", "[UNK]", "[SEP]"]  # longer than 100 characters
    assert pieces("red [SEP] blue") == ["[CLS]", "red", "[SEP]", "blue", "[SEP]"]
    assert pieces("") == ["[CLS]", "[SEP]"]
    assert normalize("a\x00b\u200bc東d", lowercase=True) == "abc 東 d"
    assert split_words("un-real, ok") == ["un", "-", "real", ",", "ok"]


def test_cased_vocabulary_keeps_case_and_accents() -> None:
    assert normalize("Ré ΟΔΟΣ", lowercase=False) == "Ré ΟΔΟΣ"
    # Character by character, as BERT's normaliser: no word-final sigma.
    assert normalize("ΟΔΟΣ", lowercase=True) == "οδοσ"


def test_long_text_is_cut_keeping_sep_and_padded() -> None:
    ids = WordPieceTokenizer(TINY, 5).encode("red green blue it is")
    assert [TINY.vocab[i] for i in ids] == ["[CLS]", "red", "green", "blue", "[SEP]"]
    ids = WordPieceTokenizer(TINY, 6).encode("red")
    assert ids.dtype == np.int64 and ids.tolist()[3:] == [0, 0, 0]


def test_tokenizer_dispatches_on_the_spec_kind() -> None:
    text = TextSpec(max_length=8, tokenizer=TINY)
    tokenizer = Tokenizer(text)
    assert tokenizer.pad_id == 0
    np.testing.assert_array_equal(
        tokenizer.encode("red"), WordPieceTokenizer(TINY, 8).encode("red")
    )
    assert tokenizer.encode_batch(["red", "blue"]).shape == (2, 8)
    moved = TokenizerSpec(kind="wordpiece", vocab=("[UNK]", "[CLS]", "[SEP]", "[PAD]", "x"))
    assert pad_id(moved) == 3
    assert pad_id(TokenizerSpec(vocab=("a",))) == PAD_ID


def test_spec_refuses_a_vocabulary_without_special_tokens() -> None:
    with pytest.raises(SpecError, match=r"text\.tokenizer\.vocab.*\[CLS\]"):
        TokenizerSpec(kind="wordpiece", vocab=("[PAD]", "[UNK]", "[SEP]", "a"))
    with pytest.raises(SpecError, match=r"text\.max_length.*at least 3"):
        TextSpec(max_length=2, tokenizer=TINY)
    with pytest.raises(SpecError, match=r"text\.tokenizer\.kind.*'wordpiece'.*'bpe'"):
        ModelSpec.from_dict(
            {
                **tiny_spec(modalities=("text",)).to_dict(),
                "text": {"max_length": 8, "tokenizer": {"kind": "bpe", "vocab": []}},
            }
        )


def test_wordpiece_spec_round_trips_through_json() -> None:
    spec = tiny_spec(modalities=("text",)).replace(text=TextSpec(max_length=8, tokenizer=TINY))
    again = ModelSpec.from_json(spec.to_json())
    assert again == spec and again.text.tokenizer.vocab_size == len(TINY_BERT_VOCAB)
    # A char spec as schema 1 always wrote it still reads (no schema bump).
    old = tiny_spec(modalities=("text",)).to_dict()
    assert old["schema_version"] == 1 and old["text"]["tokenizer"]["kind"] == "char"
    assert ModelSpec.from_dict(old) == tiny_spec(modalities=("text",))


def test_read_vocab(tmp_path: Path) -> None:
    (tmp_path / "vocab.txt").write_text("".join(t + "\n" for t in TINY_BERT_VOCAB))
    assert read_vocab(tmp_path / "vocab.txt") == TINY
    with pytest.raises(ValueError, match=r"no vocab\.txt"):
        read_vocab(tmp_path / "missing.txt")
    (tmp_path / "bad.txt").write_text("a\nb\n")
    with pytest.raises(ValueError, match=r"bad\.txt.*\[PAD\]"):
        read_vocab(tmp_path / "bad.txt")
