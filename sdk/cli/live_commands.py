"""The live subcommands: `fusionedge run` (one stream or several), `devices` and `record`.

Each imports the runtime only when it runs, as in commands.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from fusionedge.jsonio import dumps

if TYPE_CHECKING:
    from fusionedge.runtime.live import LiveOptions


def cmd_run(args: argparse.Namespace) -> int:
    from fusionedge.runtime.live_app import LiveConfig, run_live

    cameras, mics = args.camera or [], args.mic or []
    if args.streams or len(cameras) > 1 or len(mics) > 1:
        return _run_streams(args, cameras, mics)
    if not cameras and not mics and args.text is None:
        raise ValueError("give at least one of --camera, --mic, --text")
    config = LiveConfig(
        model=Path(args.model),
        camera=cameras[0] if cameras else None,
        mic=mics[0] if mics else None,
        text=args.text,
        headless=args.headless,
        jsonl=Path(args.jsonl) if args.jsonl else None,
        duration_s=args.duration,
        threads=LiveConfig.threads if args.threads is None else args.threads,
        providers=args.providers,
        web=args.web,
        loop=args.loop,
        options=_live_options(args),
    )
    count = run_live(config)
    print(f"{count} results", file=sys.stderr)
    return 0


def _live_options(args: argparse.Namespace) -> LiveOptions:
    from fusionedge.runtime.live import LiveOptions

    return LiveOptions(
        stale_ms=args.stale_ms,
        rate_hz=args.rate,
        smoothing=args.smoothing,
        audio_hop_ms=args.audio_hop_ms,
    )


def _run_streams(args: argparse.Namespace, cameras: list[str], mics: list[str]) -> int:
    """`fusionedge run` with several streams (runtime/multi_app.py): JSON lines only."""
    from fusionedge.runtime.multi_app import MultiConfig, pair_streams, read_streams_file, run_multi

    if args.streams and (cameras or mics):
        raise ValueError("give the streams either with --streams or with --camera/--mic")
    if not args.headless:
        raise ValueError(
            "several streams print JSON lines only (a window shows one stream): add --headless"
        )
    if args.web:
        raise ValueError("--web shows one stream; run one `fusionedge run --web` per stream")
    streams = read_streams_file(Path(args.streams)) if args.streams else pair_streams(cameras, mics)
    config = MultiConfig(
        model=Path(args.model),
        streams=streams,
        text=args.text,
        jsonl=Path(args.jsonl) if args.jsonl else None,
        duration_s=args.duration,
        options=_live_options(args),
        threads=MultiConfig.threads if args.threads is None else args.threads,
        providers=args.providers,
        loop=args.loop,
        max_batch=args.max_batch,
        max_runs=args.max_runs,
        max_wait_ms=args.batch_wait_ms,
    )
    count = run_multi(config)
    print(f"{count} results from {len(streams)} streams", file=sys.stderr)
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    from fusionedge.runtime.devices import list_audio_inputs, list_cameras

    cameras = list_cameras(args.max_cameras)
    try:
        audio = list_audio_inputs()
        audio_error = None
    except ImportError as e:
        audio, audio_error = [], str(e)
    if args.json:
        print(dumps({"cameras": cameras, "audio_inputs": audio, "audio_error": audio_error}))
        return 0
    print("cameras:" if cameras else f"cameras: none opened (indices 0-{args.max_cameras - 1})")
    for c in cameras:
        print(f"  {c['index']}: {c['width']}x{c['height']} at {c['fps']} fps ({c['backend']})")
    print("audio inputs:" if audio else f"audio inputs: none ({audio_error or 'no device'})")
    for a in audio:
        mark = " (default)" if a["default"] else ""
        print(
            f"  {a['index']}: {a['name']}{mark}, {a['channels']} ch, {a['hostapi']}, "
            f"default {a['default_samplerate']:.0f} Hz, accepts {a['rates']}"
        )
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    from fusionedge.runtime.camera import CameraSource
    from fusionedge.runtime.live_app import open_audio
    from fusionedge.runtime.record import RecordConfig, check_appendable, record

    config = RecordConfig(
        out=Path(args.dir),
        label=args.label,
        count=args.count,
        interval_s=args.interval,
        window_s=args.window,
        text=args.text,
        split=args.split,
        group=args.group,
    )
    # Refused before the devices start and warm up; record() checks again before it
    # saves anything. A manifest made only to test that is removed again.
    manifest = config.out / "manifest.jsonl"
    if check_appendable(manifest):
        manifest.unlink()
    camera = CameraSource(args.camera).start() if args.camera is not None else None
    audio = open_audio(args.mic, args.rate) if args.mic is not None else None
    try:
        time.sleep(args.warmup)  # let the first frames and audio blocks arrive
        lines = record(config, camera, audio)
    finally:
        for source in (camera, audio):
            if source is not None:
                source.stop()
    where = ""
    if lines:
        from fusionedge.manifest import split_for_id

        # Named because the whole session lands in one split: with few sessions, a label
        # recorded in one of them can miss the train split altogether.
        group = lines[0]["group"]
        split = args.split or split_for_id(group)
        where = f" (group {group!r}, {split} split)"
    print(
        f"recorded {len(lines)} samples of {args.label!r} into "
        f"{Path(args.dir) / 'manifest.jsonl'}{where}"
    )
    return 0
