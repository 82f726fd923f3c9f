"""Character tokenizer: learned vocabulary, normalisation, padding and truncation."""

from __future__ import annotations

import numpy as np
import pytest

from fusionedge.spec import TextSpec, TokenizerSpec
from fusionedge.tokenizer import PAD_ID, UNK_ID, Tokenizer, learn_tokenizer, normalize_text


def tokenizer(texts: list[str], max_length: int = 8, **kwargs) -> Tokenizer:
    return Tokenizer(TextSpec(max_length=max_length, tokenizer=learn_tokenizer(texts, **kwargs)))


def test_special_ids():
    assert (PAD_ID, UNK_ID) == (0, 1)


def test_vocab_is_ordered_by_frequency_then_code_point():
    spec = learn_tokenizer(["aab", "bbc", "d"])
    assert spec.vocab == ("b", "a", "c", "d")  # b:3, a:2, then c and d (1 each) by code point
    assert spec.kind == "char" and spec.lowercase is True and spec.vocab_size == 6
    assert learn_tokenizer(["ba"]).vocab == ("a", "b")


def test_learning_is_deterministic_and_independent_of_line_order():
    texts = ["the cat sat", "a dog ran", "zebra!", "the end"]
    first = learn_tokenizer(texts)
    assert learn_tokenizer(texts) == first
    assert learn_tokenizer(list(reversed(texts))) == first
    assert learn_tokenizer(iter(texts)) == first  # any iterable, consumed once


def test_min_count_drops_rare_characters_to_unknown():
    spec = learn_tokenizer(["aab", "bbc"], min_count=2)
    assert spec.vocab == ("b", "a")
    tok = Tokenizer(TextSpec(max_length=4, tokenizer=spec))
    np.testing.assert_array_equal(tok.encode("abc"), [3, 2, UNK_ID, PAD_ID])
    assert learn_tokenizer(["aab"], min_count=5).vocab == ()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Hello   World\t!", "hello world !"),
        ("  padded \n", "padded"),
        ("ＡＢＣ１２", "abc12"),  # full-width forms -> ASCII (NFKC)
        ("ﬁne", "fine"),  # ligature -> two letters (NFKC)
        ("e\u0301", "é"),  # combining accent -> one precomposed character
        ("Ⅻ", "xii"),  # Roman numeral -> letters, then lower-cased
    ],
)
def test_normalize_text(raw, expected):
    assert normalize_text(raw) == expected


def test_normalize_text_can_keep_case():
    assert normalize_text("ＡbC", lowercase=False) == "AbC"


def test_normalisation_applies_to_learning_and_encoding():
    spec = learn_tokenizer(["ＣＡＴ", "ﬁ"])
    assert set(spec.vocab) == {"c", "a", "t", "f", "i"}
    tok = Tokenizer(TextSpec(max_length=6, tokenizer=spec))
    np.testing.assert_array_equal(tok.encode("Cat"), tok.encode("ｃａｔ"))
    np.testing.assert_array_equal(tok.encode("a   t"), tok.encode(" a t "))


def test_lowercase_false_keeps_case_distinct():
    tok = tokenizer(["Aa"], max_length=3, lowercase=False)
    assert tok.spec.tokenizer.vocab == ("A", "a") and tok.spec.tokenizer.lowercase is False
    np.testing.assert_array_equal(tok.encode("aAb"), [3, 2, UNK_ID])


def test_unknown_characters_map_to_unk():
    tok = tokenizer(["abc"], max_length=6)
    ids = tok.encode("cab?é")
    np.testing.assert_array_equal(ids, [4, 2, 3, UNK_ID, UNK_ID, PAD_ID])


def test_padding_and_truncation():
    tok = tokenizer(["abcdefghij"], max_length=4)
    short, exact, long = tok.encode("ab"), tok.encode("abcd"), tok.encode("abcdefgh")
    for ids in (short, exact, long):
        assert ids.shape == (4,) and ids.dtype == np.int64
    np.testing.assert_array_equal(short, [2, 3, PAD_ID, PAD_ID])
    np.testing.assert_array_equal(exact, [2, 3, 4, 5])
    np.testing.assert_array_equal(long, exact)  # cut at max_length, no end marker
    np.testing.assert_array_equal(tok.encode(""), [PAD_ID] * 4)


def test_ids_stay_below_vocab_size():
    texts = ["the quick brown fox", "jumps over the lazy dog"]
    tok = tokenizer(texts, max_length=32)
    ids = tok.encode_batch([*texts, "UNKNOWN €"])
    assert ids.max() < tok.spec.tokenizer.vocab_size and ids.min() >= 0


def test_encode_batch_shape_and_dtype():
    tok = tokenizer(["abc"], max_length=5)
    batch = tok.encode_batch(["a", "bc", "cccccccc"])
    assert batch.shape == (3, 5) and batch.dtype == np.int64
    np.testing.assert_array_equal(batch[1], tok.encode("bc"))
    empty = tok.encode_batch([])
    assert empty.shape == (0, 5) and empty.dtype == np.int64
    assert tok.encode_batch(t for t in ["a", "b"]).shape == (2, 5)


@pytest.mark.parametrize("bad", [None, b"abc", 3, ["a"]])
def test_non_str_raises_type_error(bad):
    tok = tokenizer(["abc"])
    with pytest.raises(TypeError, match="text must be a str"):
        tok.encode(bad)
    with pytest.raises(TypeError, match="text must be a str"):
        tok.encode_batch(["ok", bad])


def test_tokenizer_from_a_hand_written_spec():
    spec = TextSpec(max_length=3, tokenizer=TokenizerSpec(vocab=("x", "y")))
    np.testing.assert_array_equal(Tokenizer(spec).encode("YXZ"), [3, 2, UNK_ID])
