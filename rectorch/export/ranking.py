"""The bundle of a two-stage run: its run channel's encoder and index, plus the ranker, the item statistics
and the manifest's ``ranking`` section that serving rebuilds the exact training features from."""

from pathlib import Path
from typing import Any

from rectorch.ranking.saved import RANKER_ONNX, STATS_FILE, read_ranking
from rectorch.runs import Run, load_run
from rectorch.serving.features import ItemStats

#: a saved channel kind → its kind in the bundle (a run channel is served by the bundle's index)
SERVED_KINDS = {"run": "ann", "covisit": "covisit", "popular": "popular"}


def two_stage_parts(run_dir: str | Path, tracking_uri: str | None = None) -> tuple[Run, dict[str, Any]]:
    """The run channel to export and the ``export_run`` keywords that add the ranking stage to its bundle.

    Raises:
        FileNotFoundError: not a two-stage run, or its channel run is gone.
        ValueError: the pipeline has no run channel or several (a bundle serves one index).
    """
    saved = read_ranking(run_dir)
    runs = [c for c in saved.channels if c["kind"] == "run"]
    if len(runs) != 1:
        names = [c["name"] for c in runs]
        raise ValueError(
            f"{run_dir}: a bundle serves exactly one run channel through its index; this pipeline has {names}"
        )
    (primary,) = runs
    source = primary["run_dir"] if Path(primary["run_dir"]).is_dir() else primary.get("mlflow_run_id")
    if not source:
        raise FileNotFoundError(f"{run_dir}: channel {primary['name']!r} run {primary['run_dir']} is gone")
    run = load_run(source, tracking_uri=tracking_uri)
    channels = []
    for channel in saved.channels:
        served = {"name": channel["name"], "kind": SERVED_KINDS[channel["kind"]], "n": int(channel["n"])}
        if channel["kind"] == "covisit":
            served["anchors"] = int(channel["anchors"])
        channels.append(served)
    builder = saved.record["builder"]
    # the similarity features read the run channel's item vectors: serving takes them from the index it ships
    stats = ItemStats.from_bytes(saved.file(STATS_FILE), STATS_FILE)
    section = {
        "channels": channels,
        "features": saved.feature_names,
        "ranker": RANKER_ONNX,
        "stats": STATS_FILE,
        "last_n": int(builder["last_n"]),
        "user_fields": list(builder["user_fields"]),
        "max_candidates": int(builder["max_candidates"]),
        "validation": {"ranker": saved.record["ranker"]},
        "similarity_vectors": "index" if stats.vectors is not None else "none",
    }
    if saved.record["ranker"].get("base"):
        section["ranker_base"] = saved.record["ranker"]["base"]
    metrics = saved.directory.parent / "metrics.json"
    extra = {
        "ranking": section,
        "extra_files": {RANKER_ONNX: saved.file(RANKER_ONNX), STATS_FILE: stats.with_vectors(None).to_bytes()},
        "extra_source": {"two_stage_run_dir": str(saved.directory.parent), "two_stage_metrics": str(metrics)},
        "metric": "ip",  # the channel's scores as the ranker learned them (q · v, no normalisation)
    }
    return run, extra
