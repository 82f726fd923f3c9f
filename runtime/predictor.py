"""Predictor: a fusionedge ONNX file in ONNX Runtime, with numpy in and out (no torch).

    from fusionedge.runtime import Predictor

    with Predictor.from_path("model.onnx") as predictor:
        result = predictor.predict(image=frame_bgr, color_order="bgr",
                                   audio=pcm, sample_rate=48000, text="seven")
        print(result.label, result.scores, predictor.providers)

Everything the model needs (input sizes, sample rate, tokenizer, labels) comes from the
spec inside the file; the preprocessing is the same sdk code that training used.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fusionedge.contract import INPUT_NAMES, OUTPUT_NAMES, PRESENT, input_layout
from fusionedge.runtime.model_file import ModelFileError, check_model_file, spec_from_metadata
from fusionedge.runtime.providers import CUDA, check_active, requested_providers
from fusionedge.runtime.result import NonFiniteError, Result, make_results
from fusionedge.runtime.sessions import open_session, session_options
from fusionedge.runtime.split import SplitGraph, part_kind
from fusionedge.spec import ModelSpec

log = logging.getLogger(__name__)

ImageInput = np.ndarray | str | Path
AudioInput = np.ndarray | str | Path


@dataclass(frozen=True)
class PredictorOptions:
    """How the ONNX Runtime session is set up.

    Attributes:
        providers: "auto" (CUDA when this onnxruntime build has it, then CPU) or a list
            of provider names ("CUDAExecutionProvider", or short: "cuda", "cpu").
        threads: Intra-op threads; 0 leaves ONNX Runtime's default (all cores).
        strict: Raise when a named provider is not active instead of warning ("auto"
            only reports what it got).
        spinning: Let idle ONNX Runtime threads spin. Off for live capture, where
            spinning threads starve the camera and microphone threads.
        top_k: How many (label, score) pairs a Result lists.
        optimization: Graph optimisation level: "all" (default), "extended", "basic",
            "disable".
        cache_dir: Keep the optimised graph here and load it next time (faster loads; the
            cache is keyed by model, ONNX Runtime version, CPU and providers).
        io_binding: On CUDA, bind inputs and outputs to device buffers instead of letting
            each run copy them ("auto": on when CUDA is active).
    """

    providers: str | Sequence[str] = "auto"
    threads: int = 0
    strict: bool = False
    spinning: bool = True
    top_k: int = 5
    optimization: str = "all"
    cache_dir: str | Path | None = None
    io_binding: bool | str = "auto"


class Predictor:
    """Runs a fusionedge model file on images, audio and text, any subset of them.

    One Predictor may serve several threads at once: prepare, predict, predict_batch and
    run keep no per-call state on the object, and ONNX Runtime allows concurrent runs of
    one session (tests/runtime/test_runtime_predictor.py checks that four threads get
    the single-thread answers). close() must not race with those calls.
    """

    def __init__(self, path: str | Path, options: PredictorOptions | None = None) -> None:
        self.path = Path(path)
        self.options = options or PredictorOptions()
        if not self.path.exists():
            raise FileNotFoundError(f"no model file or split model folder at {self.path}")
        requested = requested_providers(self.options.providers)
        self.split: SplitGraph | None = None
        if self.path.is_dir():
            self.split = SplitGraph(self.path, lambda part: self._open(part, requested))
            self.session = self.split.fusion
            self.spec: ModelSpec = self.split.spec
        else:
            self.session = self._open(self.path, requested)
            metadata = self.session.get_modelmeta().custom_metadata_map
            self.spec = spec_from_metadata(metadata, self.path)
            if part_kind(metadata) is not None:
                raise ModelFileError(
                    f"{self.path}: this is the {part_kind(metadata)!r} part of a split "
                    f"model; open its folder ({self.path.parent}) instead"
                )
            check_model_file(self.path, self.session, self.spec)
        self.providers: list[str] = self.session.get_providers()
        # "auto" asks for CUDA only because the build offers it: not getting it is reported,
        # never an error; strict is for providers the caller named.
        strict = self.options.strict and self.options.providers != "auto"
        self.missing_providers = check_active(requested, self.providers, strict)
        binding = self.options.io_binding
        self.io_binding = CUDA in self.providers if binding == "auto" else bool(binding)
        self._tokenizer = None
        log.info("loaded %s on %s", self.path, self.providers)

    def _open(self, path: Path, requested: list[str]) -> Any:
        options = self.options
        return open_session(
            path,
            session_options(options.threads, options.spinning, options.optimization),
            requested,
            Path(options.cache_dir) if options.cache_dir is not None else None,
        )

    @classmethod
    def from_path(
        cls,
        path: str | Path,
        providers: str | Sequence[str] = "auto",
        threads: int = 0,
        strict: bool = False,
        **options: Any,
    ) -> Predictor:
        """Opens a model file; see PredictorOptions for the arguments."""
        return cls(
            path, PredictorOptions(providers=providers, threads=threads, strict=strict, **options)
        )

    # ------------------------------------------------------------------ inputs

    def prepare(
        self,
        image: ImageInput | None = None,
        audio: AudioInput | None = None,
        text: str | None = None,
        sample_rate: int | None = None,
        color_order: str = "rgb",
    ) -> dict[str, np.ndarray | None]:
        """One sample's raw inputs -> model arrays by modality (None where absent).

        Args:
            image: An RGB (or, with color_order="bgr", OpenCV BGR) array [H, W], [H, W, 1],
                [H, W, 3] or [H, W, 4], or an image file path.
            audio: PCM [samples] or [samples, channels] with its sample_rate, or an audio
                file path.
            text: A line of text; blank text ("", whitespace only) counts as absent.
            sample_rate: Hz of an audio array (required with one).
            color_order: "rgb" or "bgr", for image arrays.
        """
        if isinstance(text, str) and not text.strip():
            # Blank text is no text, as in a manifest (sdk/manifest.py): the model then
            # sees what training showed it for a sample without text.
            text = None
        given = {"image": image, "audio": audio, "text": text}
        extra = [m for m, v in given.items() if v is not None and m not in self.spec.modalities]
        if extra:
            raise ValueError(f"this model takes {list(self.spec.modalities)}; got {extra} too")
        if color_order not in ("rgb", "bgr"):
            raise ValueError(f"color_order must be 'rgb' or 'bgr', got {color_order!r}")
        if sample_rate is not None and audio is None:
            raise ValueError("sample_rate was given without audio")
        out: dict[str, np.ndarray | None] = dict.fromkeys(self.spec.modalities)
        if image is not None:
            out["image"] = self._image(image, color_order)
        if audio is not None:
            out["audio"] = self._audio(audio, sample_rate)
        if text is not None:
            out["text"] = self._text(text)
        return out

    def _image(self, image: ImageInput, color_order: str) -> np.ndarray:
        from fusionedge import preprocess  # cv2 is loaded only when an image arrives

        if isinstance(image, str | Path):
            return preprocess.load_image(image, self.spec.image)
        if not isinstance(image, np.ndarray):
            raise TypeError(
                f"image: expected a numpy array or a file path, got {type(image).__name__}"
            )
        return preprocess.prepare_image(image, self.spec.image, color_order)  # type: ignore[arg-type]

    def _audio(self, audio: AudioInput, sample_rate: int | None) -> np.ndarray:
        from fusionedge import preprocess

        if isinstance(audio, str | Path):
            if sample_rate is not None:
                raise ValueError("sample_rate is for audio arrays; a file carries its own")
            return preprocess.load_audio(audio, self.spec.audio)
        if not isinstance(audio, np.ndarray):
            raise TypeError(
                f"audio: expected a numpy array or a file path, got {type(audio).__name__}"
            )
        if sample_rate is None:
            raise ValueError(
                f"audio: an array needs its sample_rate (Hz); the model takes "
                f"{self.spec.audio.sample_rate} Hz and resamples others"
            )
        return preprocess.prepare_audio(audio, sample_rate, self.spec.audio)

    def _text(self, text: str) -> np.ndarray:
        if not isinstance(text, str):
            raise TypeError(f"text: expected a str, got {type(text).__name__}")
        if self._tokenizer is None:
            from fusionedge.tokenizer import Tokenizer

            self._tokenizer = Tokenizer(self.spec.text)
        return self._tokenizer.encode(text)

    # ------------------------------------------------------------------ running

    def run(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The raw model contract: named arrays in, (scores [N, C], embedding [N, D]) out.

        Raises:
            ValueError: an input is missing, extra, or of the wrong dtype or shape.
            NonFiniteError: the model gave NaN or infinite outputs for some row.
        """
        self._check_arrays(inputs)
        return self._run_checked(inputs)

    def _run_checked(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """_run, refusing non-finite outputs: a NaN score would otherwise become the first
        label (argmax) and invalid JSON downstream."""
        scores, embedding = self._run(inputs)
        bad = ~(np.isfinite(scores).all(axis=1) & np.isfinite(embedding).all(axis=1))
        if bad.any():
            raise NonFiniteError(self._non_finite_message(inputs, np.flatnonzero(bad)))
        return scores, embedding

    def _non_finite_message(self, inputs: dict[str, np.ndarray], rows: np.ndarray) -> str:
        """Names the modalities of the first bad row that give non-finite outputs alone
        (each rerun by itself, the others absent), and what their values look like."""
        row = int(rows[0])
        present = [m for j, m in enumerate(self.spec.modalities) if inputs[PRESENT][row, j]]
        alone = [m for m in present if not self._finite_alone(inputs, row, m)]
        where = f"sample {row}" if len(rows) == 1 else f"samples {rows.tolist()} (first: {row})"
        if alone:
            cause = "; ".join(describe_input(m, inputs[INPUT_NAMES[m]][row]) for m in alone)
            source = f"from its {' and '.join(alone)} input ({cause})"
        else:
            source = f"from its inputs together ({'+'.join(present) or 'none present'})"
        return (
            f"the model gave non-finite scores (NaN or infinity) for {where} of the batch, "
            f"{source}; no result is returned rather than a meaningless one"
        )

    def _finite_alone(self, inputs: dict[str, np.ndarray], row: int, modality: str) -> bool:
        batch = self.stack([{m: None for m in self.spec.modalities}])
        name = INPUT_NAMES[modality]
        batch[name][0] = inputs[name][row]
        batch[PRESENT][0, self.spec.modalities.index(modality)] = True
        scores, embedding = self._run(batch)
        return bool(np.isfinite(scores).all() and np.isfinite(embedding).all())

    def _run(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        if self.split is not None:
            return self.split.run(inputs)
        if self.io_binding:
            return run_bound(self.session, inputs)
        scores, embedding = self.session.run(list(OUTPUT_NAMES), inputs)
        return scores, embedding

    def encode(self, modality: str, array: np.ndarray) -> np.ndarray:
        """A split model's encoder: one modality's prepared input [N, ...] -> [N, D].

        Raises:
            ValueError: the model is a single file (it has no separate encoders).
        """
        if self.split is None:
            raise ValueError(
                f"{self.path} is a single-file model; encode() needs a split model "
                "(`fusionedge export --split`)"
            )
        return self.split.encode(modality, array)

    def fuse(
        self, embeddings: dict[str, np.ndarray | None], present: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """A split model's fusion and head: embeddings by modality -> (scores, embedding)."""
        if self.split is None:
            raise ValueError(f"{self.path} is a single-file model; fuse() needs a split model")
        scores, embedding = self.split.fuse(embeddings, present)
        if not (np.isfinite(scores).all() and np.isfinite(embedding).all()):
            given = [m for m in self.spec.modalities if embeddings.get(m) is not None]
            bad = [m for m in given if not np.isfinite(embeddings[m]).all()]  # type: ignore[arg-type]
            source = f"non-finite {' and '.join(bad)} embeddings" if bad else "finite embeddings"
            raise NonFiniteError(
                f"the model gave non-finite scores (NaN or infinity) from {source} "
                f"(given: {'+'.join(given) or 'none'}); no result is returned rather than "
                "a meaningless one"
            )
        return scores, embedding

    def _check_arrays(self, inputs: dict[str, np.ndarray]) -> None:
        if self.session is None:
            raise RuntimeError(f"the Predictor for {self.path} is closed")
        expected = self.input_layout()
        missing, extra = set(expected) - set(inputs), set(inputs) - set(expected)
        if missing or extra:
            raise ValueError(
                f"model inputs are {sorted(expected)}; missing {sorted(missing)}, "
                f"unexpected {sorted(extra)}"
            )
        for name, a in inputs.items():
            if not isinstance(a, np.ndarray):
                raise TypeError(f"input {name!r}: expected a numpy array, got {type(a).__name__}")
        n = {name: a.shape[0] if a.ndim else None for name, a in inputs.items()}
        if len(set(n.values())) != 1:
            raise ValueError(f"every input needs the same batch size; got {n}")
        if not next(iter(n.values())):
            # The exported batch dimension starts at 1; an empty batch would reach kernels
            # that abort the process instead of raising.
            raise ValueError(f"inputs need a batch of at least 1 sample; got {n}")
        for name, (dtype, shape) in expected.items():
            a = inputs[name]
            if a.dtype != dtype or tuple(a.shape[1:]) != shape:
                raise ValueError(
                    f"input {name!r}: expected {np.dtype(dtype).name} [N, "
                    f"{', '.join(map(str, shape))}], got {a.dtype} {list(a.shape)}"
                )

    def input_layout(self) -> dict[str, tuple[type, tuple[int, ...]]]:
        """Input name -> (dtype, shape without the batch dimension): contract.input_layout."""
        return {
            name: (np.dtype(dtype).type, shape)
            for name, (dtype, shape) in input_layout(self.spec).items()
        }

    def stack(self, samples: list[dict[str, np.ndarray | None]]) -> dict[str, np.ndarray]:
        """Prepared samples -> a batch of model inputs, zeros and present=False where absent."""
        layout = self.input_layout()
        batch = {
            name: np.zeros((len(samples), *shape), dtype=dtype)
            for name, (dtype, shape) in layout.items()
        }
        for i, sample in enumerate(samples):
            for j, m in enumerate(self.spec.modalities):
                if sample[m] is not None:
                    batch[INPUT_NAMES[m]][i] = sample[m]
                    batch["present"][i, j] = True
        return batch

    def predict(
        self,
        image: ImageInput | None = None,
        audio: AudioInput | None = None,
        text: str | None = None,
        sample_rate: int | None = None,
        color_order: str = "rgb",
    ) -> Result:
        """Predicts one sample from any subset of the model's modalities (see prepare)."""
        t0 = time.perf_counter()
        sample = self.prepare(image, audio, text, sample_rate, color_order)
        return self._predict([sample], t0)[0]

    def predict_batch(
        self,
        images: Sequence[ImageInput | None] | None = None,
        audios: Sequence[AudioInput | None] | None = None,
        texts: Sequence[str | None] | None = None,
        sample_rate: int | None = None,
        color_order: str = "rgb",
    ) -> list[Result]:
        """Predicts N samples in one session run; each list has N entries (None = absent)."""
        t0 = time.perf_counter()
        columns = {"images": images, "audios": audios, "texts": texts}
        for name, column in columns.items():
            if column is not None and (
                isinstance(column, str | bytes | np.ndarray) or not isinstance(column, Sequence)
            ):
                raise TypeError(
                    f"{name}: expected a list with one entry per sample, got "
                    f"{type(column).__name__}"
                )
        if sample_rate is not None and audios is None:
            raise ValueError("sample_rate was given without audios")
        lengths = {k: len(v) for k, v in columns.items() if v is not None}
        if not lengths:
            raise ValueError("predict_batch needs at least one of images, audios, texts")
        if len(set(lengths.values())) != 1:
            raise ValueError(f"images, audios and texts must have the same length; got {lengths}")
        n = next(iter(lengths.values()))
        if n == 0:
            return []
        samples = [
            self.prepare(
                images[i] if images is not None else None,
                audios[i] if audios is not None else None,
                texts[i] if texts is not None else None,
                sample_rate if audios is not None and audios[i] is not None else None,
                color_order,
            )
            for i in range(n)
        ]
        return self._predict(samples, t0)

    def _predict(self, samples: list[dict[str, np.ndarray | None]], t0: float) -> list[Result]:
        if self.session is None:
            raise RuntimeError(f"the Predictor for {self.path} is closed")
        batch = self.stack(samples)
        t1 = time.perf_counter()
        scores, embedding = self._run_checked(batch)
        t2 = time.perf_counter()
        latency = {"preprocess": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3}
        results = make_results(
            self.spec, scores, embedding, batch["present"], latency, self.options.top_k
        )
        t3 = time.perf_counter()
        for r in results:
            r.latency_ms.update(postprocess=(t3 - t2) * 1e3, total=(t3 - t0) * 1e3)
        return results

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Releases the ONNX Runtime session(s)."""
        self.session = None  # type: ignore[assignment]
        self.split = None

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def describe_input(modality: str, array: np.ndarray) -> str:
    """What a suspect input holds: non-finite values, PCM beyond [-1, 1], or values in
    range (then the graph itself, its weights say, makes the NaN)."""
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.all():
            return f"{modality}: {int((~finite).sum())} of {array.size} values are NaN or infinite"
        peak = float(np.abs(array).max())
        if peak > 1:
            return f"{modality}: largest |value| {peak:.3g}, outside PCM's [-1, 1]"
    return (
        f"{modality}: {array.dtype} values from {array.min():g} to {array.max():g}, in range: "
        "the model's graph or weights make the non-finite values"
    )


def run_bound(session: Any, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """session.run through IO binding: inputs copied to the device once, outputs bound to
    host memory, so ONNX Runtime does no per-run allocation or staging of its own."""
    binding = session.io_binding()
    for name, value in inputs.items():
        binding.bind_cpu_input(name, np.ascontiguousarray(value))
    for name in OUTPUT_NAMES:
        binding.bind_output(name, "cpu")
    session.run_with_iobinding(binding)
    scores, embedding = binding.copy_outputs_to_cpu()
    return scores, embedding
