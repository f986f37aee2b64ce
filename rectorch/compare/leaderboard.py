"""The leaderboard: one row per run, ranked by NDCG within each evaluation protocol."""

from pathlib import Path

import pandas as pd

from rectorch.compare.store import RunSummary

#: model hyper-parameters shown for every run that has them (the last part of the flattened key)
KEY_PARAM_NAMES = (
    "dim",
    "num_blocks",
    "num_heads",
    "dropout",
    "lr",
    "weight_decay",
    "l2",
    "mask_prob",
    "max_len",
    "num_layers",
    "temperature",
)
ACCURACY = ("ndcg", "hr", "mrr")
BEYOND = ("coverage", "pop_bias")
TEXT_COLUMNS = ("run", "model", "params")


def protocol_label(run: RunSummary) -> str:
    """The protocol and the exact data a run was measured on: runs compare only within one label."""
    p = run.protocol
    fingerprint = str(run.results.get("dataset_fingerprint") or run.tags.get("dataset_fingerprint", "?"))[:8]
    return (
        f"{p.get('dataset')} | split={p.get('split')} | ranking={p.get('ranking')} | mask_seen={p.get('mask_seen')}"
        f" | users={p.get('users')} | data={fingerprint}"
    )


def protocol_groups(runs: list[RunSummary]) -> dict[str, list[RunSummary]]:
    """Runs grouped by :func:`protocol_label`, the largest group first."""
    groups: dict[str, list[RunSummary]] = {}
    for run in runs:
        groups.setdefault(protocol_label(run), []).append(run)
    return dict(sorted(groups.items(), key=lambda item: (-len(item[1]), item[0])))


def protocol_warning(runs: list[RunSummary]) -> str | None:
    """A warning when the runs were measured under more than one protocol (or on different data)."""
    groups = protocol_groups(runs)
    if len(groups) < 2:
        return None
    lines = [f"  {label}: {len(members)} run(s)" for label, members in groups.items()]
    return (
        f"warning: these runs were measured under {len(groups)} different protocols or datasets; "
        "they are ranked within each group only, never against each other:\n" + "\n".join(lines)
    )


def _short(value: str) -> str:
    """``rectorch.models.components.sequence_losses.FullSoftmaxLoss`` -> ``FullSoftmaxLoss``."""
    return value.rsplit(".", 1)[-1] if value.count(".") > 1 and " " not in value else value


def key_params(run: RunSummary, varying: set[str]) -> str:
    """``dim=64 lr=0.001 loss=FullSoftmaxLoss``: the usual knobs plus every model param that varies
    (a two-stage run: its ranker and channels)."""
    if run.results.get("channels") and run.results.get("ranker"):
        return f"ranker={run.results['ranker'].get('ranker')} channels={','.join(run.results['channels'])}"
    shown = {}
    for key, value in sorted(run.params.items()):
        if not key.startswith("model.") or value in ("None", "null"):
            continue
        parts = key.split(".")
        if key == "model.loss._target_":
            shown["loss"] = _short(value)
        elif parts[-1] in KEY_PARAM_NAMES or (key in varying and not parts[-1].startswith("_")):
            shown[".".join(parts[-2:]) if key in varying and len(parts) > 2 else parts[-1]] = value
    return " ".join(f"{name}={value}" for name, value in shown.items())


def _varying(runs: list[RunSummary]) -> set[str]:
    """Model params whose value differs between runs of the same model family."""
    varying: set[str] = set()
    for model in {run.model for run in runs}:
        family = [run.params for run in runs if run.model == model]
        keys = {key for params in family for key in params if key.startswith("model.")}
        varying |= {key for key in keys if len({params.get(key) for params in family}) > 1}
    return varying


def _row(run: RunSummary, k: int, varying: set[str]) -> dict[str, object]:
    results = run.results
    row: dict[str, object] = {"run": run.run_name, "model": run.model, "params": key_params(run, varying)}
    row.update({f"{name}@{k}": run.test_metric(f"{name}@{k}") for name in (*ACCURACY, *BEYOND)})
    row.update(
        {
            "epochs": results.get("epochs"),
            "best_epoch": results.get("best_epoch"),
            "train_s": results.get("train_seconds"),
            "s_per_epoch": results.get("seconds_per_epoch"),
            "peak_mb": results.get("peak_rss_mb"),
            "protocol": protocol_label(run),
            "run_id": run.run_id,
        }
    )
    return row


def _channel_rows(run: RunSummary, k: int) -> list[dict[str, object]]:
    """A two-stage run's channels, each alone on the same test users (``<run>/<channel>`` rows)."""
    rows = []
    for name, stages in (run.results.get("channels") or {}).items():
        test = stages.get("test", {})
        row: dict[str, object] = {"run": f"{run.run_name}/{name}", "model": f"channel:{name}", "params": ""}
        row.update({f"{m}@{k}": float(test.get(f"{m}@{k}", float("nan"))) for m in (*ACCURACY, *BEYOND)})
        row.update({"protocol": protocol_label(run), "run_id": run.run_id})
        rows.append(row)
    return rows


def leaderboard(runs: list[RunSummary], k: int = 10) -> pd.DataFrame:
    """One row per run: ranked by test NDCG@k within each protocol group (``rank`` restarts per group).
    A two-stage run adds one row per channel, measured alone in that run under the same protocol.

    Args:
        runs: finished runs, e.g. from :func:`rectorch.compare.load_runs`.
        k: the cut-off of the accuracy and beyond-accuracy columns.
    """
    varying = _varying(runs)
    frames = []
    for members in protocol_groups(runs).values():
        frame = pd.DataFrame([row for run in members for row in (_row(run, k, varying), *_channel_rows(run, k))])
        frame = frame.sort_values(f"ndcg@{k}", ascending=False, na_position="last")
        frame.insert(0, "rank", range(1, len(frame) + 1))
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _formatted(frame: pd.DataFrame) -> pd.DataFrame:
    """Metrics to 4 decimals, timings to 1, counts as integers; the protocol and run id columns dropped."""
    shown = frame.drop(columns=["protocol", "run_id"]).astype(object)
    for column in shown.columns:
        if "@" in column:
            shown[column] = [f"{v:.4f}" for v in frame[column]]
        elif column in ("train_s", "s_per_epoch", "peak_mb"):
            shown[column] = [f"{float(v):.1f}" if v is not None else "" for v in frame[column]]
    return shown.fillna("")


def _by_protocol(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    return [(label, _formatted(group)) for label, group in frame.groupby("protocol", sort=False)]


def format_text(frame: pd.DataFrame) -> str:
    """The leaderboard as plain text, one table per protocol group."""
    blocks = [f"protocol: {label}\n{table.to_string(index=False)}" for label, table in _by_protocol(frame)]
    return "\n\n".join(blocks)


def format_markdown(frame: pd.DataFrame) -> str:
    """The leaderboard as GitHub Markdown, one table per protocol group."""
    blocks = []
    for label, table in _by_protocol(frame):
        header = "| " + " | ".join(table.columns) + " |"
        rule = "|" + "|".join("---" if c in TEXT_COLUMNS else "---:" for c in table.columns)
        rows = ["| " + " | ".join(str(v) for v in values) + " |" for values in table.itertuples(index=False)]
        blocks.append("\n".join([f"**Protocol:** `{label}`", "", header, rule + "|", *rows]))
    return "\n\n".join(blocks) + "\n"


def write_tables(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """``leaderboard.md`` and ``leaderboard.csv`` (full precision, with protocol and run id) in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown, csv = out_dir / "leaderboard.md", out_dir / "leaderboard.csv"
    markdown.write_text(format_markdown(frame))
    frame.to_csv(csv, index=False)
    return [markdown, csv]
