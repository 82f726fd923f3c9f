"""Split models: one ONNX file per modality encoder and one for the fusion and head.

`fusionedge export RUN --out model.onnx --split` writes, beside model.onnx, a folder
model.split/ with image.onnx, audio.onnx, text.onnx (those of the model's modalities) and
fusion.onnx. Each file carries the same `fusionedge.spec` metadata as the single file,
plus `fusionedge.part` naming the part. The contract between the parts:

- encoder `m`: the model input of modality m (image, audio or tokens) -> `embedding` [N, D];
- for a log-mel audio encoder, two files instead: audio_frontend.onnx (`audio` PCM [N, S],
  any S >= n_fft -> `logmel` [N, 1, n_mels, frames]) and audio.onnx (`logmel` ->
  `embedding`), so a live loop can compute the log-mel of new audio only;
- fusion: `<m>_embedding` [N, D] float32 for every modality, and `present` [N, M] bool
  -> `scores` [N, C] and `embedding` [N, D], as the single file's outputs.

A live loop can then run each encoder only when its modality has new data and reuse the
cached embedding otherwise (runtime/streaming.py); composed on the same inputs, the parts
give the single file's scores.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fusionedge.contract import (
    FRONTEND_PART,
    FUSION_PART,
    INPUT_NAMES,
    OUTPUT_NAMES,
    PART_KEY,
    embedding_input,
)
from fusionedge.runtime.model_file import ModelFileError, check_model_file, spec_from_metadata
from fusionedge.spec import ModelSpec


def is_split_folder(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / f"{FUSION_PART}.onnx").is_file()


def part_kind(metadata: dict[str, str]) -> str | None:
    """The part name a file declares ("image", "fusion", ...), None for a single file."""
    return metadata.get(PART_KEY)


class SplitGraph:
    """The sessions of a split model, composed to the single file's contract."""

    def __init__(self, folder: Path, open_session: Callable[[Path], Any]) -> None:
        if not is_split_folder(folder):
            raise ModelFileError(
                f"{folder}: not a split fusionedge model (a folder with {FUSION_PART}.onnx "
                "and one <modality>.onnx per modality, written by `fusionedge export --split`)"
            )
        self.folder = folder
        # With a separate front end, the audio part takes log-mel frames instead of PCM.
        self.logmel_input = (folder / f"{FRONTEND_PART}.onnx").is_file()
        self.fusion = open_session(folder / f"{FUSION_PART}.onnx")
        self.spec: ModelSpec = self._check_part(self.fusion, FUSION_PART, None)
        self.encoders: dict[str, Any] = {}
        for m in self.spec.modalities:
            session = open_session(folder / f"{m}.onnx")
            self._check_part(session, m, self.spec)
            self.encoders[m] = session
        self.frontend: Any | None = None
        if self.logmel_input:
            self.frontend = open_session(folder / f"{FRONTEND_PART}.onnx")
            self._check_part(self.frontend, FRONTEND_PART, self.spec)
        self.embed_dim = self.spec.embed_dim

    def _check_part(self, session: Any, part: str, spec: ModelSpec | None) -> ModelSpec:
        path = self.folder / f"{part}.onnx"
        metadata = session.get_modelmeta().custom_metadata_map
        found = spec_from_metadata(metadata, path)
        if part_kind(metadata) != part:
            raise ModelFileError(
                f"{path}: declares part {part_kind(metadata)!r}, expected {part!r}; the "
                "folder's files must come from one `fusionedge export --split`"
            )
        if spec is not None and found != spec:
            raise ModelFileError(
                f"{path}: its spec differs from {FUSION_PART}.onnx's; the parts come from "
                "different exports"
            )
        check_model_file(path, session, found, part, self.logmel_input)
        return found

    @property
    def sessions(self) -> list[Any]:
        front = [self.frontend] if self.frontend is not None else []
        return [*front, *self.encoders.values(), self.fusion]

    def encode(self, modality: str, batch: np.ndarray) -> np.ndarray:
        """One modality's model input [N, ...] -> its embedding [N, D]."""
        if modality == "audio" and self.frontend is not None:
            return self.encode_logmel(self.logmel(batch))
        return self.encoders[modality].run(["embedding"], {INPUT_NAMES[modality]: batch})[0]

    def logmel(self, audio: np.ndarray) -> np.ndarray:
        """PCM [N, S] (S >= n_fft) -> log-mel [N, 1, n_mels, 1 + (S - n_fft) // hop]."""
        if self.frontend is None:
            raise ValueError(f"{self.folder}: this split model has no separate audio front end")
        return self.frontend.run(["logmel"], {"audio": audio})[0]

    def encode_logmel(self, logmel: np.ndarray) -> np.ndarray:
        """Log-mel frames [N, 1, n_mels, frames] of a whole window -> audio embedding [N, D]."""
        return self.encoders["audio"].run(["embedding"], {"logmel": logmel})[0]

    def fuse(
        self, embeddings: dict[str, np.ndarray | None], present: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings by modality (None: absent, zeros are passed) -> (scores, embedding).

        A modality marked absent in `present` is replaced by the model's learned
        placeholder inside the fusion part, so what its embedding holds does not matter.
        """
        n = present.shape[0]
        feeds = {
            embedding_input(m): np.zeros((n, self.embed_dim), np.float32)
            if embeddings.get(m) is None
            else embeddings[m]
            for m in self.spec.modalities
        }
        feeds["present"] = present
        scores, embedding = self.fusion.run(list(OUTPUT_NAMES), feeds)
        return scores, embedding

    def run(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The single file's contract: encoders run only for modalities present in some row."""
        present = inputs["present"]
        embeddings = {
            m: self.encode(m, inputs[INPUT_NAMES[m]]) if present[:, j].any() else None
            for j, m in enumerate(self.spec.modalities)
        }
        return self.fuse(embeddings, present)
