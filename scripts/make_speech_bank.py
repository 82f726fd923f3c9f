"""Make the bank of spoken digits that the demo data set draws its audio from.

Each digit "zero".."nine" is spoken by espeak-ng in a fixed grid of accents, voice
variants, speeds and pitches, resampled to 16 kHz mono, trimmed, peak-normalised and
written as 16-bit FLAC, with an index.json that lists every clip. The grid is fixed, so
running the script again with the same espeak-ng gives the same bank.

Usage:
    python scripts/make_speech_bank.py [--out sdk/demo/speech]

Needs the espeak-ng program (Debian: apt-get install espeak-ng) and numpy, soundfile, soxr.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SAMPLE_RATE = 16000
# The model's audio window is 1 s; a margin leaves room for speed perturbation and placement.
MAX_DURATION_S = 0.95
PEAK_DBFS = -3.0
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "sdk" / "demo" / "speech-bank"
MAX_BANK_BYTES = 5_000_000

# Accents that ship with espeak-ng itself (the mbrola voices need extra packages).
ACCENTS = (
    "en-us",
    "en",
    "en-gb-scotland",
    "en-029",
    "en-gb-x-rp",
    "en-us-nyc",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
)
# Variants change the formants and the glottal source; "" is the accent's own voice.
# Whispered and robotic variants are left out: the bank should sound like plain speech.
VARIANTS = ("", "m3", "f2", "f4", "klatt", "m7", "f5", "klatt3")
SPEEDS = (150, 165, 180, 200)  # words per minute; espeak-ng's default is 175
PITCHES = (30, 45, 60, 75)  # 0..99; espeak-ng's default is 50
TAKES_PER_ACCENT = 4
SPEED_STEP = 20  # a take longer than MAX_DURATION_S is said again this much faster

# Silence trimming: 10 ms frames, quieter than this below the loudest frame is silence.
FRAME_S = 0.01
SILENCE_DB = -40.0
PAD_S = 0.015


def espeak_version(exe: str) -> str:
    """The version number espeak-ng reports, e.g. "1.51"."""
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"text-to-speech:\s*(\S+)", out)
    return match.group(1) if match else out.strip()


def synthesize(exe: str, text: str, voice: str, speed: int, pitch: int, tmp: Path) -> np.ndarray:
    """Speak `text` and return it as float32 mono at SAMPLE_RATE."""
    wav = tmp / "take.wav"
    # A file rather than --stdout: the streamed WAV header carries a placeholder length.
    cmd = [exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav), text]
    subprocess.run(cmd, check=True, capture_output=True)
    audio, rate = sf.read(wav, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        audio = soxr.resample(audio, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    return audio


def trim_silence(audio: np.ndarray) -> np.ndarray:
    """Cut leading and trailing frames far below the loudest frame, keeping a short pad."""
    frame = int(FRAME_S * SAMPLE_RATE)
    n_frames = len(audio) // frame
    if n_frames == 0:
        return audio
    frames = audio[: n_frames * frame].reshape(n_frames, frame)
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    loud = np.flatnonzero(rms > rms.max() * 10 ** (SILENCE_DB / 20))
    pad = int(PAD_S * SAMPLE_RATE)
    start = max(loud[0] * frame - pad, 0)
    stop = min((loud[-1] + 1) * frame + pad, len(audio))
    out = audio[start:stop].copy()
    # A short fade keeps the cut from clicking.
    fade = min(int(0.005 * SAMPLE_RATE), len(out) // 2)
    ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
    out[:fade] *= ramp
    out[len(out) - fade :] *= ramp[::-1]
    return out


def normalize(audio: np.ndarray) -> np.ndarray:
    peak = float(np.abs(audio).max())
    if peak == 0.0:
        raise RuntimeError("espeak-ng produced silence")
    return (audio * (10 ** (PEAK_DBFS / 20) / peak)).astype(np.float32)


def grid() -> list[tuple[str, str, int, int]]:
    """(accent, variant, speed, pitch) for each take of one digit: the same for every digit,
    so that no voice is a cue for the class."""
    takes = []
    for i, accent in enumerate(ACCENTS):
        for j in range(TAKES_PER_ACCENT):
            # Strides that are coprime-ish with the table sizes spread the combinations out.
            variant = VARIANTS[(i + 2 * j) % len(VARIANTS)]
            speed = SPEEDS[(i + j) % len(SPEEDS)]
            pitch = PITCHES[(3 * i + j) % len(PITCHES)]
            takes.append((accent, variant, speed, pitch))
    return takes


def make_bank(out: Path, exe: str) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("d[0-9]_*.flac"):
        stale.unlink()
    version = espeak_version(exe)
    clips = []
    dropped = 0
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for digit, word in enumerate(DIGITS):
            count = 0
            for accent, variant, speed, pitch in grid():
                voice = f"{accent}+{variant}" if variant else accent
                for attempt in range(3):
                    s = speed + attempt * SPEED_STEP
                    audio = trim_silence(synthesize(exe, word, voice, s, pitch, tmp))
                    if len(audio) < MAX_DURATION_S * SAMPLE_RATE:
                        break
                else:
                    dropped += 1
                    continue
                name = f"d{digit}_{count:03d}.flac"
                sf.write(out / name, normalize(audio), SAMPLE_RATE, subtype="PCM_16", format="FLAC")
                clips.append(
                    {
                        "file": name,
                        "digit": digit,
                        "word": word,
                        "voice": voice,
                        "speed": s,
                        "pitch": pitch,
                        "duration_s": round(len(audio) / SAMPLE_RATE, 4),
                    }
                )
                count += 1
    index = {
        "generator": "scripts/make_speech_bank.py",
        "espeak_ng_version": version,
        "sample_rate": SAMPLE_RATE,
        "clips": clips,
    }
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    index["dropped"] = dropped
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="bank folder")
    parser.add_argument("--espeak", default="espeak-ng", help="espeak-ng executable")
    args = parser.parse_args(argv)
    exe = shutil.which(args.espeak)
    if exe is None:
        print(f"{args.espeak} not found; Debian: apt-get install espeak-ng", file=sys.stderr)
        return 1

    index = make_bank(args.out, exe)
    clips = index["clips"]
    per_digit = [sum(c["digit"] == d for c in clips) for d in range(len(DIGITS))]
    durations = np.array([c["duration_s"] for c in clips])
    total = sum(p.stat().st_size for p in args.out.iterdir() if p.is_file())
    print(f"espeak-ng {index['espeak_ng_version']}: {len(clips)} clips in {args.out}")
    print("clips per digit: " + ", ".join(f"{d}:{n}" for d, n in enumerate(per_digit)))
    print(f"dropped (still too long at the fastest retry): {index['dropped']}")
    print(
        f"duration s: min {durations.min():.3f} mean {durations.mean():.3f} "
        f"max {durations.max():.3f}"
    )
    print(
        f"voices: {len({c['voice'] for c in clips})}, speeds: "
        f"{sorted({c['speed'] for c in clips})}, pitches: {sorted({c['pitch'] for c in clips})}"
    )
    print(f"total size: {total / 1e6:.2f} MB ({total} bytes)")
    if total > MAX_BANK_BYTES:
        print(f"bank is over {MAX_BANK_BYTES / 1e6:.0f} MB: reduce the grid", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
