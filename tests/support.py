"""Test helpers: tiny specs and configs, and small real data sets.

Test modules import them as `support` (tests/conftest.py puts this folder on sys.path
under pytest's default import mode); tests/training/conftest.py builds fixtures on them.

The data sets are written as real files (PNG images, WAV audio, manifest.jsonl) so that
training goes through the same decoding as a user's data. Each class is easy to tell
apart in every modality (a solid colour, a pure tone, a word), so a few epochs of a tiny
model learn it, and a test can ask for accuracy far above chance.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import soundfile as sf

from fusionedge.spec import (
    AudioSpec,
    ComponentSpec,
    ImageSpec,
    ModelSpec,
    TextSpec,
    TokenizerSpec,
)

# Model-sized settings that keep a CPU epoch on ~100 samples well under a second.
TINY_OVERRIDES = (
    "image.height=16",
    "image.width=16",
    "audio.sample_rate=8000",
    "audio.num_samples=4000",
    "audio.n_fft=256",
    "audio.hop_length=128",
    "audio.n_mels=16",
    "text_max_length=12",
    "model.embed_dim=16",
    "model.encoder_params.image.width=8",
    "model.encoder_params.image.depth=2",
    "model.encoder_params.audio.width=16",
    "model.encoder_params.audio.depth=3",
    "model.encoder_params.text.width=16",
    "batch_size=16",
    "optim.lr=0.01",
    "optim.warmup_epochs=0.5",
    "device=cpu",
    "amp=false",
    "tensorboard=false",
    "patience=0",
    # One thread: on a shared 2-core machine two spinning intra-op threads made each
    # tiny epoch ~30x slower; it also makes runs repeat exactly across processes.
    "threads=1",
    # The tiny data sets tell classes apart by a steady pure tone, which the default
    # per-band normalisation removes by design; and a few epochs on ~100 samples learn
    # nothing through the default camera and microphone augmentation. Tests that are
    # about those defaults set them back.
    "audio.normalize=none",
    # The tiny models' accuracy bars were set with concat; a few epochs of the default sum
    # fusion on ~100 samples learn text alone and minority classes more slowly. Every
    # fusion is trained and exported in tests/training/test_models.py and
    # tests/export/test_export_parity.py, and the default one end to end by the slow tests.
    "model.fusion=concat",
    "augment.image.zoom_out=0",
    "augment.image.aspect=0",
    "augment.audio.gain_db=0",
    "augment.audio.shift_s=0",
    "augment.audio.noise_snr_db=null",
    "augment.audio.speed=0",
    "augment.audio.spec_augment.time_masks=0",
    "augment.audio.spec_augment.freq_masks=0",
)

TINY_IMAGE = ImageSpec(height=16, width=16)
TINY_AUDIO = AudioSpec(sample_rate=8000, num_samples=4000, n_fft=256, hop_length=128, n_mels=16)
TINY_TEXT = TextSpec(
    max_length=10, tokenizer=TokenizerSpec(vocab=tuple("abcdefghijklmnopqrstuvwxyz "))
)

# tiny_spec gives these parameters to parts that cannot be built from their defaults:
# hf_bert takes its shape from a model folder's config.json; here a tiny one.
TINY_BERT = {
    "vocab_size": 64,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 48,
    "max_position_embeddings": 32,
}
PART_PARAMS: dict[str, dict[str, Any]] = {"hf_bert": {"architecture": TINY_BERT}}

# The tiny BERT folder's vocabulary: BERT's special tokens, the data sets' words, and
# letters and digits (bare and as "##" continuations) so that any word is covered.
TINY_BERT_VOCAB = (
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    *".,!?-'",
    *("red", "green", "blue", "it", "is", "the", "sample", "##s", "##ing"),
    *"abcdefghijklmnopqrstuvwxyz0123456789",
    *("##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789"),
)

LABELS = {
    "multiclass": ("blue", "green", "red"),
    "binary": ("no", "yes"),
    "multilabel": ("a", "b", "c"),
    "regression": ("value",),
}

# Per class: a BGR colour (as OpenCV writes it), a tone in Hz and a word.
CLASSES = {
    "red": ((40, 40, 220), 400.0, "red"),
    "green": ((40, 200, 40), 1000.0, "green"),
    "blue": ((220, 60, 40), 2200.0, "blue"),
}

MULTILABEL_TONES = (400.0, 1000.0, 2200.0)


def tiny_spec(
    modalities: Sequence[str] = ("image", "audio", "text"),
    task: str = "multiclass",
    image_encoder: str | None = None,
    audio_encoder: str | None = None,
    text_encoder: str | None = None,
    fusion: str = "concat",
    head_params: dict[str, Any] | None = None,
    encoder_params: dict[str, dict[str, Any]] | None = None,
    embed_dim: int = 16,
) -> ModelSpec:
    """A small valid ModelSpec.

    Encoders default to the first registered name per modality, with the part's own
    default keyword arguments (so any registered part builds without knowing its options).
    """
    from fusionedge.training.model import ENCODERS  # fills the registries

    names = {"image": image_encoder, "audio": audio_encoder, "text": text_encoder}
    params = encoder_params or {}
    chosen = {m: names[m] or ENCODERS[m].names()[0] for m in modalities}
    encoders = {
        m: ComponentSpec(chosen[m], dict(params.get(m, PART_PARAMS.get(chosen[m], {}))))
        for m in modalities
    }
    return ModelSpec(
        modalities=tuple(modalities),
        labels=LABELS[task],
        task=task,  # type: ignore[arg-type]
        encoders=encoders,
        fusion=ComponentSpec(fusion),
        head=ComponentSpec(task, dict(head_params or {})),
        embed_dim=embed_dim,
        image=TINY_IMAGE if "image" in modalities else None,
        audio=TINY_AUDIO if "audio" in modalities else None,
        text=TINY_TEXT if "text" in modalities else None,
    )


def tiny_config(*extra: str):
    """A TrainConfig with the tiny settings, then the extra key=value overrides."""
    from fusionedge.training.config import load_config

    return load_config(None, [*TINY_OVERRIDES, *extra])


def write_dataset(
    root: Path,
    per_split: dict[str, int] | None = None,
    modalities: Sequence[str] = ("image", "audio", "text"),
    task: str = "multiclass",
    gray: bool = False,
    rate: int = 16000,
    seconds: float = 0.6,
    image_size: tuple[int, int] = (20, 24),
    seed: int = 0,
    classes: Sequence[str] = tuple(sorted(CLASSES)),
    per_class: dict[str, dict[str, int]] | None = None,
) -> Path:
    """Writes a small labelled data set (PNG + WAV + manifest.jsonl) under root.

    per_split is the number of samples per class in each split (for multilabel and
    regression the classes still pick the tone; the labels come from elsewhere). Text,
    when asked for, is on every other sample only, so the data set also has samples with
    a modality missing.

    Labels by task: multiclass and binary -> the class name; multilabel -> a random
    subset of "a", "b", "c", each lighting one colour channel and adding one tone;
    regression -> the class's tone frequency in kHz plus noise.

    per_class overrides the count of some classes in some splits, for an imbalanced data
    set: {"train": {"red": 4}} gives train 4 red samples and per_split's count of the
    others; the classes stay interleaved.
    """
    per_split = per_split or {"train": 16, "val": 6, "test": 4}
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "wav").mkdir(exist_ok=True)
    lines: list[dict[str, Any]] = []
    names = sorted(classes)
    for split, count in per_split.items():
        counts = {n: (per_class or {}).get(split, {}).get(n, count) for n in names}
        # Round-robin over the classes until each has its count; without per_class this
        # is names[k % len(names)], as before.
        order = sorted(
            ((i, j) for j, n in enumerate(names) for i in range(counts[n])),
        )
        for k, (_, j) in enumerate(order):
            name = names[j]
            colour, tone, word = CLASSES[name]
            sample_id = f"{split}{k:03d}"
            line: dict[str, Any] = {"id": sample_id, "split": split}
            tones = [tone]
            if task == "multilabel":
                # A random subset of labels, so every combination occurs; label i lights
                # colour channel i and adds tone i.
                bits = rng.random(3) < 0.5
                colour = tuple(int(220 * b + 30) for b in bits)  # B, G, R
                tones = [t for t, b in zip(MULTILABEL_TONES, bits, strict=True) if b]
                line["label"] = [c for c, b in zip("abc", bits, strict=True) if b]
            elif task == "regression":
                line["label"] = round(tone / 1000 + float(rng.normal(0, 0.02)), 4)
            else:
                line["label"] = name
            if "image" in modalities:
                h, w = image_size
                noise = rng.normal(0, 12, size=(h, w, 3))
                pixels = np.clip(np.array(colour)[None, None, :] + noise, 0, 255).astype(np.uint8)
                if gray:
                    pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY)
                rel = f"img/{sample_id}.png"
                assert cv2.imwrite(str(root / rel), pixels)
                line["image"] = rel
            if "audio" in modalities:
                t = np.arange(round(rate * seconds)) / rate
                phase = rng.uniform(0, 2 * np.pi)
                amplitude = rng.uniform(0.2, 0.6)
                pcm = sum(amplitude * np.sin(2 * np.pi * f * t + phase) for f in tones)
                pcm = np.zeros_like(t) + pcm + rng.normal(0, 0.02, size=t.shape)
                rel = f"wav/{sample_id}.wav"
                sf.write(str(root / rel), pcm.astype(np.float32), rate, subtype="PCM_16")
                line["audio"] = rel
            if "text" in modalities and k % 2 == 0:
                line["text"] = word if task in ("multiclass", "binary") else f"sample {k}"
            lines.append(line)
    (root / "manifest.jsonl").write_text(
        "".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8"
    )
    return root


def write_bert_folder(root: Path, seed: int = 0, weights: str = "safetensors") -> Path:
    """Writes a tiny random BERT model folder laid out as Hugging Face and
    sentence-transformers write one (all-MiniLM-L6-v2's files, in small).

    weights: "safetensors" (model.safetensors) or "bin" (pytorch_model.bin, a plain
    state dict). The weights come from numpy's seeded generator, so the same seed gives
    the same folder on any machine.
    """
    root.mkdir(parents=True, exist_ok=True)
    arch = {**TINY_BERT, "vocab_size": len(TINY_BERT_VOCAB)}
    h, inner, positions = arch["hidden_size"], arch["intermediate_size"], 32
    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-12,
        "type_vocab_size": 2,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        **arch,
    }
    rng = np.random.default_rng(seed)

    def normal(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (scale * rng.standard_normal(shape)).astype(np.float32)

    def norm(prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}.weight": 1 + normal(h, scale=0.1), f"{prefix}.bias": normal(h)}

    def dense(prefix: str, n_out: int, n_in: int) -> dict[str, np.ndarray]:
        return {f"{prefix}.weight": normal(n_out, n_in), f"{prefix}.bias": normal(n_out)}

    tensors = {
        "embeddings.word_embeddings.weight": normal(len(TINY_BERT_VOCAB), h, scale=1.0),
        "embeddings.position_embeddings.weight": normal(positions, h),
        "embeddings.token_type_embeddings.weight": normal(2, h),
        "embeddings.position_ids": np.arange(positions, dtype=np.int64)[None],
        **norm("embeddings.LayerNorm"),
        **dense("pooler.dense", h, h),  # in real folders too; the encoder ignores it
    }
    for i in range(arch["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        for name in ("query", "key", "value"):
            tensors.update(dense(f"{p}.attention.self.{name}", h, h))
        tensors.update(dense(f"{p}.attention.output.dense", h, h))
        tensors.update(norm(f"{p}.attention.output.LayerNorm"))
        tensors.update(dense(f"{p}.intermediate.dense", inner, h))
        tensors.update(dense(f"{p}.output.dense", h, inner))
        tensors.update(norm(f"{p}.output.LayerNorm"))
    if weights == "safetensors":
        from safetensors.numpy import save_file

        save_file(tensors, str(root / "model.safetensors"))
    else:
        import torch

        torch.save({k: torch.from_numpy(v) for k, v in tensors.items()}, root / "pytorch_model.bin")
    (root / "config.json").write_text(json.dumps(config, indent=2))
    (root / "vocab.txt").write_text("".join(t + "\n" for t in TINY_BERT_VOCAB), encoding="utf-8")
    (root / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
        {
            "idx": 2,
            "name": "2",
            "path": "2_Normalize",
            "type": "sentence_transformers.models.Normalize",
        },
    ]
    (root / "modules.json").write_text(json.dumps(modules, indent=2))
    (root / "1_Pooling").mkdir(exist_ok=True)
    pooling = {"word_embedding_dimension": h, "pooling_mode_mean_tokens": True}
    (root / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    return root


def read_log(run_dir: Path) -> list[dict[str, str]]:
    import csv

    with (run_dir / "log.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def read_weights(path: Path) -> dict[str, Any]:
    """The model tensors of a checkpoint, read with safetensors only."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys() if k.startswith("model.")}  # noqa: SIM118


def train_and_export(data: Path, root: Path, split: bool = False) -> Path:
    """A tiny model trained 6 epochs on data and exported to root/model.onnx (and, with
    split, to the split folder root/model.split too).

    Training sets torch's thread count from the tiny config; it is restored afterwards so
    the tests that run next see the process as it was.
    """
    import torch

    from fusionedge.export.run import export_run
    from fusionedge.training.trainer import train

    threads = torch.get_num_threads()
    try:
        train(data, root / "run", tiny_config("epochs=6"), progress=False)
        export_run(root / "run", root / "model.onnx", data, split=split)
    finally:
        torch.set_num_threads(threads)
    return root / "model.onnx"


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """torch on one thread for the test, restored afterwards (a module that wants it for
    every test imports it under an autouse fixture's name)."""
    import torch  # here, not at the top: runtime tests import this module without torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
