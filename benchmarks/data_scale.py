"""Training memory and speed against the data set's size, decoded in memory and on disk.

    python benchmarks/data_scale.py [--data DIR] [--n 4000] [--scale 10] [--out report.json]

Writes avdigits demo data (--n samples; or takes --data), and a second manifest in the
same folder that lists every line --scale times under new ids and groups (the files are
shared: decoding them is real work each time, and the decoded arrays are as large as for
that many distinct files). Then trains one epoch on each, once with the splits decoded in
memory and once decoded to disk (data_in_memory_mb=0), each in its own process, and
reports the peak resident memory of the process (ru_maxrss), the whole run's time and the
epoch's time (log.csv: the training steps and the validation pass).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

CHILD = """
import json, logging, resource, sys, time
logging.basicConfig(level=logging.INFO)
from fusionedge.training.config import load_config
from fusionedge.training.trainer import train
manifest, out, in_memory_mb, threads = sys.argv[1:5]
overrides = ["epochs=1", "tensorboard=false", f"threads={threads}"]
config = load_config(None, [*overrides, f"data_in_memory_mb={in_memory_mb}"])
t0 = time.perf_counter()
result = train(manifest, out, config, progress=False)
total = time.perf_counter() - t0
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": total, "max_rss_mb": peak_mb}))
"""


def scaled_manifest(data: Path, scale: int) -> Path:
    """data/manifest.x{scale}.jsonl: each line scale times, with new ids and groups."""
    lines = [json.loads(x) for x in (data / "manifest.jsonl").read_text().splitlines() if x]
    out = data / f"manifest.x{scale}.jsonl"
    with out.open("w") as f:
        for k in range(scale):
            for line in lines:
                copy = dict(line, id=f"{line['id']}-r{k}")
                if "group" in copy:
                    copy["group"] = f"{copy['group']}-r{k}"
                f.write(json.dumps(copy) + "\n")
    return out


def train_once(manifest: Path, run: Path, in_memory_mb: float, threads: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(manifest), str(run), str(in_memory_mb), str(threads)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"training failed:\n{done.stderr[-3000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    decoded = [line for line in done.stderr.splitlines() if "decoded" in line]
    log = (run / "log.csv").read_text().splitlines()
    header, row = log[0].split(","), log[1].split(",")
    figures["epoch_s"] = float(row[header.index("seconds")])
    figures["decode_log"] = decoded[-1].split(":", 2)[-1] if decoded else None
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a data set folder (default: demo data)")
    parser.add_argument("--n", type=int, default=4000, help="demo samples to write")
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument("--out", type=Path, help="also write the report here")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: steadier on a busy machine)"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="where the runs (and the data decoded to disk) go; default: the system's "
        "temporary folder, which on some systems is a RAM disk: pick a disk folder there",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="data_scale-", dir=args.workdir) as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "data"
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "fusionedge.cli",
                    "demo-data",
                    str(data),
                    "--n",
                    str(args.n),
                ],
                check=True,
            )
        big = f"x{args.scale}"
        manifests = {
            "x1": data / "manifest.jsonl",
            big: scaled_manifest(data, args.scale),
        }
        report: dict[str, Any] = {"data": str(data), "scale": args.scale, "runs": {}}
        for size, manifest in manifests.items():
            for mode, limit in (("memory", 1e9), ("disk", 0)):
                run = Path(tmp) / f"run-{size}-{mode}"
                report["runs"][f"{size}_{mode}"] = train_once(manifest, run, limit, args.threads)
                print(size, mode, report["runs"][f"{size}_{mode}"], flush=True)
        runs = report["runs"]
        report["rss_ratio_disk"] = runs[f"{big}_disk"]["max_rss_mb"] / runs["x1_disk"]["max_rss_mb"]
        report["rss_ratio_memory"] = (
            runs[f"{big}_memory"]["max_rss_mb"] / runs["x1_memory"]["max_rss_mb"]
        )
        for size in ("x1", big):
            report[f"epoch_speed_disk_vs_memory_{size}"] = (
                runs[f"{size}_memory"]["epoch_s"] / runs[f"{size}_disk"]["epoch_s"]
            )
        (data / manifests[big].name).unlink()
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
