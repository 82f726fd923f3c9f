"""A read-only array of fixed-size rows in a raw file, read a few rows at a time.

Rows are read with os.pread, not through a memory map: every page a map touches counts
in the process's resident memory until the kernel reclaims it, and an epoch touches every
row, so a mapped 3 GB data set shows as 3 GB resident. A pread goes through the page
cache, which the kernel shares and frees as it needs, and leaves only the rows asked for
in the process.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


class DiskArray:
    """[n, *row_shape] of dtype, stored row after row in `path` (C order, no header).

    Indexing with an int, a slice or an integer array returns a new numpy array; nothing
    else of numpy's interface is offered. Safe to read from several threads (pread has no
    shared file position).
    """

    def __init__(self, path: str | Path, dtype: np.dtype | type, shape: tuple[int, ...]) -> None:
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.shape = tuple(shape)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        size = self.path.stat().st_size
        if size != self.shape[0] * self.row_bytes:
            raise ValueError(
                f"{self.path}: {size} bytes, expected {self.shape[0]} rows of "
                f"{self.row_bytes} bytes for {self.dtype} {self.shape}"
            )
        self._fd = os.open(self.path, os.O_RDONLY)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int | slice | np.ndarray | list[int]) -> np.ndarray:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step == 1:
                return self._read_run(start, max(start, stop))
            index = np.arange(start, stop, step)
        if isinstance(index, int | np.integer):
            return self[np.array([int(index)])][0]
        return self._read_rows(np.asarray(index))

    def _read_rows(self, rows: np.ndarray) -> np.ndarray:
        """Rows in the order asked, each contiguous run of them read with one pread."""
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        rows = np.where(rows < 0, rows + len(self), rows).astype(np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} rows")
        out = np.empty((len(rows), *self.shape[1:]), self.dtype)
        if not rows.size:
            return out
        flat = out.reshape(len(rows), -1).view(np.uint8)
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        # Runs of consecutive row numbers (in sorted order) are one read each.
        breaks = np.flatnonzero(np.diff(sorted_rows) != 1) + 1
        for run in np.split(np.arange(len(rows)), breaks):
            if not run.size:
                continue
            block = self._read_run(int(sorted_rows[run[0]]), int(sorted_rows[run[-1]]) + 1)
            flat[order[run]] = block.reshape(len(run), -1).view(np.uint8)
        return out

    def _read_run(self, start: int, stop: int) -> np.ndarray:
        """Rows start..stop-1, read straight into a new array."""
        out = np.empty((stop - start, *self.shape[1:]), self.dtype)
        view = memoryview(out.reshape(-1).view(np.uint8))
        done, offset = 0, start * self.row_bytes
        while done < len(view):  # preadv may return less than asked (signals, big reads)
            got = os.preadv(self._fd, [view[done:]], offset + done)
            if got == 0:
                raise OSError(f"{self.path}: ends before row {stop} of {len(self)}")
            done += got
        return out

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()
