"""`fusionedge predict`: one sample from files and text, or with --data a whole data set
into JSON lines (runtime/batch_predict.py). No torch.
"""

from __future__ import annotations

import argparse

from fusionedge.jsonio import dumps

PREDICT_FLAGS = {"image": "--image", "audio": "--audio", "text": "--text"}
BATCH_FLAGS = {"split": "--split", "out": "--out", "batch": "--batch", "shard": "--shard"}


def cmd_predict(args: argparse.Namespace) -> int:
    from fusionedge.runtime import Predictor

    check_predict_mode(args)
    if args.data is not None:
        return predict_data(args)
    with Predictor.from_path(args.model, providers=args.providers) as predictor:
        if args.image is None and args.audio is None and not (args.text or "").strip():
            # The API answers "nothing present" (the live loop needs it when every input
            # is stale); a command line without inputs is a mistake, not that question.
            raise ValueError(nothing_given(predictor.spec.modalities, args.text))
        result = predictor.predict(image=args.image, audio=args.audio, text=args.text)
    if args.json:
        out = result.to_dict()
        out.pop("embedding")
        out["providers"] = predictor.providers
        print(dumps(out))
        return 0
    shown = result.label if result.value is None else f"{result.value:.4f}"
    given = "+".join(m for m, p in result.present.items() if p) or "nothing"
    print(
        f"{shown}   (from {given}; {result.latency_ms['total']:.1f} ms on {predictor.providers[0]})"
    )
    for label, score in result.top_k:
        print(f"  {label:<20}{score:.4f}")
    return 0


def check_predict_mode(args: argparse.Namespace) -> None:
    """One sample (--image/--audio/--text) or a data set (--data and its flags), not both."""
    one = [flag for name, flag in PREDICT_FLAGS.items() if getattr(args, name) is not None]
    if args.data is not None:
        if one:
            raise ValueError(
                f"--data predicts a whole data set and {', '.join(one)} one sample; give "
                "either --data (with --out) or the sample's --image/--audio/--text"
            )
        if args.out is None:
            raise ValueError("--data needs --out, the JSON-lines file to write the predictions to")
        return
    batch = [flag for name, flag in BATCH_FLAGS.items() if getattr(args, name) is not None]
    if batch or args.no_progress:
        flags = ", ".join(batch + (["--no-progress"] if args.no_progress else []))
        raise ValueError(f"{flags}: only with --data (predicting a data set)")


def predict_data(args: argparse.Namespace) -> int:
    """`fusionedge predict MODEL --data D --out preds.jsonl`: runtime/batch_predict.py."""
    from fusionedge.runtime import Predictor
    from fusionedge.runtime.batch_predict import BatchOptions, Progress, predict_dataset
    from fusionedge.runtime.batch_work import parse_shard

    options = BatchOptions(
        split=args.split or "all",
        batch_size=32 if args.batch is None else args.batch,
        shard=parse_shard(args.shard) if args.shard is not None else None,
    )
    with Predictor.from_path(args.model, providers=args.providers) as predictor:
        progress = None if args.no_progress else Progress()
        summary = predict_dataset(predictor, args.data, args.out, options, progress)
        providers = predictor.providers
    if args.json:
        print(dumps(summary.to_dict() | {"providers": providers}))
        return 0
    shard = f", shard {summary.shard}" if summary.shard is not None else ""
    print(
        f"{summary.done} samples of the {summary.split} split{shard} predicted into "
        f"{summary.out} in {summary.seconds:.1f} s ({summary.samples_per_s:.1f} samples/s "
        f"on {providers[0]}); {summary.skipped} already there, skipped; "
        f"{summary.errors} errors"
    )
    if summary.errors:
        print('  lines with an "error" field name each sample that could not be predicted')
    if summary.accuracy is not None:
        print(f"  accuracy {summary.accuracy:.4f} over {summary.labelled} labelled samples")
    return 0


def nothing_given(modalities: tuple[str, ...], text: str | None) -> str:
    flags = ", ".join(PREDICT_FLAGS[m] for m in modalities)
    blank = " (the --text given is blank, which counts as no text)" if text is not None else ""
    return f"no input given{blank}; this model takes {flags}: give at least one"
