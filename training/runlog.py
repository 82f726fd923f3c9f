"""Per-epoch logs of a run: log.csv always, TensorBoard when it is installed."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class RunLog:
    """CSV (always) and TensorBoard (when installed and enabled) per-epoch logs."""

    def __init__(self, run_dir: Path, tensorboard: bool) -> None:
        self.csv_path = run_dir / "log.csv"
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                # Asked for (config tensorboard=true) and not there: say so, with the cause.
                log.warning(
                    "TensorBoard logging is off: %s; logging to log.csv only "
                    "(pip install 'fusionedge[train]', or set tensorboard=false)",
                    e,
                )
            else:
                self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def truncate_after(self, epoch: int) -> None:
        """Drops rows of epochs after `epoch` (written by a run killed before its checkpoint)."""
        if not self.csv_path.exists():
            return
        with self.csv_path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        kept = [r for r in rows if int(r["epoch"]) <= epoch]
        if len(kept) < len(rows):
            with self.csv_path.open("w", newline="") as f:
                out = csv.DictWriter(f, fieldnames=list(rows[0]))
                out.writeheader()
                out.writerows(kept)

    def write(self, row: dict[str, Any]) -> None:
        new = not self.csv_path.exists()
        with self.csv_path.open("a", newline="") as f:
            out = csv.DictWriter(f, fieldnames=list(row))
            if new:
                out.writeheader()
            out.writerow(row)
        if self.writer is not None:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, int | float):
                    self.writer.add_scalar(key, value, row["epoch"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
