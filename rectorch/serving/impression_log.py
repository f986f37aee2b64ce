"""Impression logs: one Parquet row per shown item, in rotating files that appear only when complete.

The columns (:data:`SCHEMA`) are what ``rectorch-abtest`` reads (:mod:`rectorch.experiments.impressions`):

- required: ``impression_id: str, user_id: str, arm: str, item_id: str, position: int32 (0 = top),
  propensity: float64 (the arm's probability for this answer, the same for each of its items),
  clicked: bool, timestamp: float64 (unix seconds of the answer)``;
- context: ``converted: bool, segment: str, score: float64, source: str (ann, popular, explore, ...),
  category: str ("" when unknown), popularity: float64 (training interactions), context: str (the request's
  context as JSON), feedback_timestamp: float64 (null without feedback)``.

Rows are buffered in memory. A file is written when ``rows_per_file`` rows are buffered (exactly that many
per file), when the oldest buffered row is ``flush_seconds`` old (checked on append and by
:meth:`ImpressionLog.flush_due`), and on :meth:`ImpressionLog.close`. Each file is written under a hidden
temporary name, fsynced, then hard-linked to its final name ``impressions-<UTC time>-<pid>-<seq>.parquet``
(a link never replaces an existing file) and the temporary name removed: a reader never sees half a file,
and no file is overwritten. A killed process loses the rows it had buffered.
"""

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

SCHEMA = pa.schema(
    [
        ("impression_id", pa.string()),
        ("user_id", pa.string()),
        ("arm", pa.string()),
        ("item_id", pa.string()),
        ("position", pa.int32()),
        ("propensity", pa.float64()),
        ("clicked", pa.bool_()),
        ("timestamp", pa.float64()),
        ("converted", pa.bool_()),
        ("segment", pa.string()),
        ("score", pa.float64()),
        ("source", pa.string()),
        ("category", pa.string()),
        ("popularity", pa.float64()),
        ("context", pa.string()),
        ("feedback_timestamp", pa.float64()),
    ]
)


def impression_rows(
    impression_id: str,
    record: Mapping[str, Any],
    clicked: Sequence[str] = (),
    converted: Sequence[str] = (),
    feedback_time: float | None = None,
) -> dict[str, list]:
    """Log columns for one answer: ``record`` is the strategy layer's impression record (see ``strategy.py``)."""
    items = record["items"]
    n = len(items)
    clicked, converted = set(clicked), set(converted)
    return {
        "impression_id": [impression_id] * n,
        "user_id": [record["user"]] * n,
        "arm": [record["arm"]] * n,
        "item_id": list(items),
        "position": list(range(n)),
        "propensity": [record["propensity"]] * n,
        "clicked": [item in clicked for item in items],
        "timestamp": [record["time"]] * n,
        "converted": [item in converted for item in items],
        "segment": [record["segment"]] * n,
        "score": list(record["scores"]),
        "source": list(record["sources"]),
        "category": list(record["categories"]),
        "popularity": list(record["popularity"]),
        "context": [json.dumps(record["context"], sort_keys=True)] * n,
        "feedback_timestamp": [feedback_time] * n,
    }


class ImpressionLog:
    """Buffered, rotating Parquet files in one directory (thread-safe; see the module docstring).

    Args:
        directory: where the files go (created when missing).
        rows_per_file: rows of a complete file.
        flush_seconds: longest time a row waits in the buffer (at the next append or ``flush_due``).
        clock: unix seconds now (injectable for tests).
    """

    def __init__(
        self,
        directory: str | Path,
        rows_per_file: int = 100_000,
        flush_seconds: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if rows_per_file <= 0 or flush_seconds <= 0:
            raise ValueError(f"impression log: rows_per_file ({rows_per_file}) and flush_seconds must be positive")
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ValueError(f"impression log directory {self.directory} cannot be created: {error}") from None
        if not os.access(self.directory, os.W_OK):
            raise ValueError(f"impression log directory {self.directory} is not writable")
        self.rows_per_file, self.flush_seconds, self.clock = rows_per_file, flush_seconds, clock
        self._buffer: dict[str, list] = {name: [] for name in SCHEMA.names}
        self._oldest: float | None = None
        self._lock = threading.Lock()  # the buffer
        self._write_lock = threading.Lock()  # file names and writes
        self._seq = 0

    @property
    def buffered(self) -> int:
        with self._lock:
            return len(self._buffer["impression_id"])

    def append(self, rows: Mapping[str, Sequence]) -> None:
        """Buffer ``rows`` (every column of :data:`SCHEMA`, equal lengths); write the files that became due."""
        if set(rows) != set(SCHEMA.names) or len({len(column) for column in rows.values()}) != 1:
            raise ValueError(f"impression log rows need the columns {SCHEMA.names}, all of one length")
        with self._lock:
            for name in SCHEMA.names:
                self._buffer[name].extend(rows[name])
            if self._oldest is None:
                self._oldest = self.clock()
        self.flush_due()

    def flush_due(self) -> None:
        """Write full files, and the rest when the oldest buffered row is ``flush_seconds`` old; errors are logged."""
        try:
            with self._lock:
                old = self._oldest is not None and self.clock() - self._oldest >= self.flush_seconds
            self._write(everything=old)
        except OSError as error:
            log.error("impression log %s: %s (rows kept for the next attempt)", self.directory, error)

    def flush(self) -> list[Path]:
        """Write every buffered row now; returns the files written (an ``OSError`` keeps the rows buffered)."""
        return self._write(everything=True)

    def close(self) -> None:
        self.flush()

    def _take(self, everything: bool) -> list[dict[str, list]]:
        with self._lock:
            size = len(self._buffer["impression_id"])
            cut = size if everything else size - size % self.rows_per_file
            if cut == 0:
                return []
            taken = {name: column[:cut] for name, column in self._buffer.items()}
            self._buffer = {name: column[cut:] for name, column in self._buffer.items()}
            self._oldest = self.clock() if cut < size else None
        step = self.rows_per_file
        return [{name: column[i : i + step] for name, column in taken.items()} for i in range(0, cut, step)]

    def _write(self, everything: bool) -> list[Path]:
        with self._write_lock:
            chunks, written = self._take(everything), []
            for at, chunk in enumerate(chunks):
                try:
                    written.append(self._write_file(pa.Table.from_pydict(chunk, schema=SCHEMA)))
                except OSError:
                    self._requeue(chunks[at:])
                    raise
            return written

    def _requeue(self, chunks: list[dict[str, list]]) -> None:
        with self._lock:
            for name in SCHEMA.names:
                self._buffer[name] = [value for chunk in chunks for value in chunk[name]] + self._buffer[name]
            self._oldest = self.clock()

    def _write_file(self, table: pa.Table) -> Path:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        temporary = self.directory / f".impressions-{stamp}-{os.getpid()}-{os.urandom(4).hex()}.tmp"
        try:
            pq.write_table(table, temporary)
            with open(temporary, "rb") as handle:
                os.fsync(handle.fileno())
            while True:
                self._seq += 1
                final = self.directory / f"impressions-{stamp}-{os.getpid()}-{self._seq:06d}.parquet"
                try:
                    os.link(temporary, final)  # never replaces an existing file
                    break
                except FileExistsError:
                    continue
        finally:
            temporary.unlink(missing_ok=True)
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return final
