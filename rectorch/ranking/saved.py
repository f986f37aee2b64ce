"""A saved two-stage run: the ranker (ONNX + its native files), the item statistics and ``ranking.json``.

``ranking.json`` records what serving needs to rebuild the exact features the ranker was trained on: the
channels in merge order (kind, ``n``, their saved runs), the feature names, the builder settings and the
ranker's ONNX validation. Export reads it back with :func:`read_ranking`; nothing here is pickled.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rectorch.interprocess import write_atomic
from rectorch.ranking.pipeline import TwoStageResult

RANKING_DIR = "ranking"
RANKING_FILE = "ranking.json"
RANKER_ONNX = "ranker.onnx"
STATS_FILE = "features.npz"
SCHEMA_VERSION = 1


@dataclass
class SavedRanking:
    """``ranking.json`` read back, with the directory its files are in."""

    directory: Path
    record: dict[str, Any]

    @property
    def channels(self) -> list[dict[str, Any]]:
        """The channels in merge order, each ``{"name", "kind", "n", ...}``."""
        return list(self.record["channels"])

    @property
    def feature_names(self) -> list[str]:
        return list(self.record["features"])

    def file(self, name: str) -> bytes:
        path = self.directory / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing from the saved two-stage run")
        return path.read_bytes()


def save_ranking(output_dir: Path, result: TwoStageResult, fingerprint: str, settings: dict[str, Any]) -> list[Path]:
    """Write the ranking files under ``output_dir/ranking/``, ``ranking.json`` last (it marks a complete save)."""
    directory = output_dir / RANKING_DIR
    directory.mkdir(parents=True, exist_ok=True)
    written = [
        _write(directory / RANKER_ONNX, result.ranker.to_onnx()),
        _write(directory / STATS_FILE, result.stats.to_bytes()),
    ]
    written += result.ranker.save(directory)
    record = {
        "schema_version": SCHEMA_VERSION,
        "dataset_fingerprint": fingerprint,
        "channels": result.channels,
        "features": list(result.builder.names),
        "builder": settings,
        "ranker": {
            "name": result.ranker.name,
            "file": RANKER_ONNX,
            "onnx": getattr(result.ranker, "onnx_report", {}),
            "base": None if getattr(result.ranker, "base", None) is None else asdict(result.ranker.base),
        },
        "stats": STATS_FILE,
    }
    written.append(_write(directory / RANKING_FILE, json.dumps(record, indent=2, sort_keys=True).encode()))
    return written


def _write(path: Path, data: bytes) -> Path:
    write_atomic(path, data)
    return path


def read_ranking(run_dir: str | Path) -> SavedRanking:
    """The saved ranking of a two-stage run directory (or of its ``ranking/`` folder).

    Raises:
        FileNotFoundError: no ``ranking.json`` there.
        ValueError: a malformed ``ranking.json`` (named with the key).
    """
    root = Path(run_dir)
    directory = root if (root / RANKING_FILE).is_file() else root / RANKING_DIR
    path = directory / RANKING_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{root}: not a two-stage run (no {RANKING_DIR}/{RANKING_FILE})")
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(record, dict) or record.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{path}: schema_version must be {SCHEMA_VERSION}")
    for key in ("channels", "features", "builder", "ranker", "stats"):
        if key not in record:
            raise ValueError(f"{path}: missing key {key!r}")
    return SavedRanking(directory, record)
