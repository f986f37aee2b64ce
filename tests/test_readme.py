"""Every command README.md shows is executed here, so none of them can rot (issue 14: `min_rating=4` did).

- ```bash blocks run as written under ``bash -euo pipefail`` in a fresh directory that is also
  ``$RECTORCH_HOME``; ``tests/readme/shell.sh`` shrinks each training (overrides appended last), serves in
  the background on a free port, and checks instead of runs ``pip install`` (CI installs exactly these
  extras: :func:`test_pip_extras_exist`), ``python3.11 -m venv``, ``python -m pytest`` (this suite) and the
  download (no network: its arguments are parsed). Blocks on real data are ``slow`` and skipped without it.
- ```python blocks run with the venv's python in the directory of the bash block they build on (BLOCKS);
  each top-level expression's value is captured and checked against the files it came from.
- Inline commands (the result tables': hours of training each) are composed with the packaged configs and
  every ``_target_`` imported (tests/readme/dry_run.py); ``rectorch-eval`` runs on a tiny run,
  ``rectorch-serve`` parses its settings against a real bundle, ``rectorch-compare`` runs on a store of
  ML-1M runs when the data is present (else its arguments are parsed).
"""

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import PROJECT_ROOT
from tests.readme import document, dry_run
from tests.readme.run_blocks import BlockFailed, block_env, run_python, substitute
from tests.readme.runner import BLOCK_TIMEOUT, Ran, Runner, Spec

TEXT = document.read()

# --- what each bash block must leave behind ------------------------------------------------------------------


def check_quickstart(ran: Ran) -> None:
    (run,) = ran.runs()
    assert run["family"] == "sasrec" and run["spec"]["name"] == "synthetic"
    assert run["config"]["paths"]["root_dir"] == str(ran.workdir)  # outputs under where the user works
    (metrics,) = (ran.workdir / "logs/runs").glob("*/metrics.json")
    assert "ndcg@10" in json.loads(metrics.read_text())["test"]


def check_own_configs(ran: Ran) -> None:
    (run,) = ran.runs()
    assert run["config"]["data"]["path"] == f"{ran.workdir}/abs/shop/events.parquet"  # myconf/data/shop.yaml
    assert run["config"]["data"]["time_col"] == "ts" and run["family"] == "sasrec"  # ... and experiment/


def check_real_data(ran: Ran) -> None:
    singles = ran.runs("logs/runs")
    assert [(r["family"], r["spec"]["name"]) for r in singles] == [("ease", "ml1m")] * 2 + [("sasrec", "csv")] * 2
    assert singles[1]["config"]["model"]["l2"] == 300
    assert [r["protocol"]["split"] for r in singles[2:]] == ["loo", "temporal"]
    assert sorted(r["config"]["model"]["l2"] for r in ran.runs("logs/multiruns")) == [100, 200, 500]


def check_hparams_search(ran: Ran) -> None:
    results = sorted((ran.workdir / "logs/multiruns").glob("*/optimization_results.yaml"))
    assert len(results) == 2 and all("best_params" in path.read_text() for path in results), results


def check_compare(ran: Ran) -> None:
    reports = ran.workdir / "reports/ml1m"
    assert "ml1m" in (reports / "leaderboard.md").read_text()
    assert (reports / "leaderboard.csv").is_file() and len(list(reports.glob("*.png"))) == 4


def check_mlflow_ui(ran: Ran) -> None:
    experiments = json.loads((ran.logs / "mlflow-experiments.json").read_text())["experiments"]
    assert "rectorch-synthetic" in {e["name"] for e in experiments}  # the store of the run trained here


def check_export_and_serve(ran: Ran) -> None:
    assert (ran.workdir / "export/sasrec-synthetic-quick/manifest.json").is_file()
    (answer,) = [json.loads(line) for line in (ran.logs / "curl.out").read_text().splitlines() if line.strip()]
    items = [entry["id"] for entry in answer["items"]]
    assert len(items) == 10 and not {"12", "48"} & set(items)  # the history is never recommended back


def check_two_stage(ran: Ran) -> None:
    metrics = json.loads((ran.workdir / "logs/runs/two_stage/metrics.json").read_text())
    assert metrics["model"] == "two_stage" and list(metrics["channels"]) == ["sasrec", "covisit", "popular"]
    assert (ran.workdir / "export/two_stage-synthetic-two_stage/ranker.onnx").is_file()
    (answer,) = [json.loads(line) for line in (ran.logs / "curl.out").read_text().splitlines() if line.strip()]
    assert len(answer["items"]) == 5 and not {"12", "48"} & {item["id"] for item in answer["items"]}
    assert all("ranker" in item["stages"] for item in answer["items"])


def check_scale(ran: Ran) -> None:
    parquet, ddp = ran.runs()
    assert parquet["spec"]["name"] == "parquet" and parquet["family"] == ddp["family"] == "sasrec"
    loss = "rectorch.models.components.sequence_losses.MixedSampledSoftmaxLoss"
    assert parquet["config"]["model"]["loss"]["_target_"] == ddp["config"]["model"]["loss"]["_target_"] == loss
    assert parquet["config"]["data"]["preprocessing"]["engine"] == "polars"
    assert ddp["config"]["trainer"]["strategy"] == "ddp" and ddp["config"]["trainer"]["devices"] == 2
    (entry,) = (ran.workdir / "logs/cache").glob("*.arrow")  # the Parquet log's memory-mapped cache entry
    assert (entry / "meta.json").is_file() and (entry / "interactions.arrow").is_file()


COMPARE_SETUP = """
# finished runs in the store: ML-1M runs (one of them a SASRec) from one --multirun sweep, and that sweep's id
rectorch-train --multirun experiment=popularity_ml1m,sasrec_ml1m
RT_SWEEP_ID=$(python - <<'PY'
from mlflow import MlflowClient
from rectorch.compare.store import default_tracking_uri
client = MlflowClient(default_tracking_uri())
experiment = client.get_experiment_by_name("rectorch-ml1m")
(parent,) = client.search_runs([experiment.experiment_id], "tags.mlflow.runName LIKE 'sweep-%'")
print(parent.info.run_id)
PY
)
"""

# The README's blocks, each found by a substring of its code. A bash block not listed runs with the defaults
# (synthetic data, no setup); a python block must be listed, with the bash block it builds on.
BLOCKS: dict[str, Spec] = {
    "quickstart": Spec('pip install ".[train]" && rectorch-train', check=check_quickstart),
    "own configs": Spec("myconf/experiment/sasrec_shop.yaml", check=check_own_configs),
    "real data": Spec("python -m rectorch.data.download", data=("ml-1m/ml-1m.txt.gz",), check=check_real_data),
    "hparams search": Spec(
        "rectorch-train -m hparams_search=sasrec_optuna", data=("ml-100k/u.data",), check=check_hparams_search
    ),
    "compare": Spec(
        "rectorch-compare --tag seed=42 --sweep",
        data=("ml-1m/ml-1m.txt.gz",),
        keep_logger=True,
        setup=COMPARE_SETUP,
        substitutions={"<parent run id>": "$RT_SWEEP_ID"},
        check=check_compare,
    ),
    "export and serve": Spec("rectorch-export run_dir=logs/runs/quick", keep_logger=True, check=check_export_and_serve),
    "two stage": Spec("experiment=two_stage_synthetic hydra.run.dir", check=check_two_stage),
    "scale": Spec('pip install -e ".[scale]"', check=check_scale),
    "mlflow ui": Spec("mlflow ui --backend-store-uri", after="export and serve", check=check_mlflow_ui),
    "load_run": Spec("rectorch.load_run(", after="quickstart"),
    "compare()": Spec("from rectorch.compare import compare", after="compare"),
    "Recommender": Spec("Recommender.from_bundle", after="export and serve"),
}


def _found(lang: str) -> dict[str, document.Block]:
    found = {}
    for name, spec in BLOCKS.items():
        matches = [block for block in document.blocks(TEXT, lang) if spec.key in block.code]
        if len(matches) == 1:
            found[name] = matches[0]
    return found


BASH, PYTHON = _found("bash"), _found("python")


def _needs_data(name: str | None) -> bool:
    """Does block ``name``, or a block it runs after, read real data?"""
    while name:
        if BLOCKS[name].data:
            return True
        name = BLOCKS[name].after
    return False


def _params(lang: str, found: dict[str, document.Block]) -> list:
    names = {block: name for name, block in found.items()}
    params = []
    for block in document.blocks(TEXT, lang):
        name = names.get(block)
        marks = [pytest.mark.slow] if _needs_data(name) else []
        params.append(pytest.param(name, block, id=name or block.name, marks=marks))
    return params


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Runner:
    return Runner(tmp_path_factory.mktemp("readme"), BLOCKS, BASH)


# --- the README as a whole ------------------------------------------------------------------------------------


def test_every_block_is_known() -> None:
    """Each spec finds exactly one block, every python block has a spec, and no other fence language appears."""
    for name, spec in BLOCKS.items():
        hits = [b.name for lang in ("bash", "python") for b in document.blocks(TEXT, lang) if spec.key in b.code]
        assert len(hits) == 1, f"BLOCKS[{name!r}] key {spec.key!r} matches {hits} in README.md"
    unknown = [b.name for b in document.blocks(TEXT, "python") if b not in PYTHON.values()]
    assert not unknown, f"python blocks without a spec in tests/test_readme.py BLOCKS (which block first?): {unknown}"
    assert document.fence_languages(TEXT) <= {"bash", "python", ""}


def test_pip_extras_exist() -> None:
    """The README's `pip install` lines are not re-run (CI installs exactly these); the extras they name exist."""
    declared = set(tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    named = document.pip_extras(TEXT)
    assert {"train", "dev", "serve"} <= named, named  # the three the README teaches
    assert named <= declared, f"README names extras pyproject.toml lacks: {sorted(named - declared)}"


def test_placeholders_need_values() -> None:
    """A placeholder left in a block is refused with its name, not run as a shell redirection."""
    with pytest.raises(BlockFailed, match="<parent run id>"):
        substitute("rectorch-compare --sweep <parent run id>", {})
    assert substitute("ls <x>  # <comment>", {"<x>": "y"}) == "ls y  # <comment>"


def test_broken_commands_fail(tmp_path: Path, monkeypatch) -> None:
    """The harness is not a rubber stamp: the issue's broken override, a bad loss key and a bad flag all fail."""
    broken = document.Block("bash", "rectorch-train data.preprocessing.min_ratin=4 && echo unreachable\n", 1)
    runner = Runner(tmp_path, {"broken": Spec("min_ratin")}, {"broken": broken})
    with pytest.raises(BlockFailed, match=r"(?s)Could not override 'data\.preprocessing\.min_ratin'"):
        runner.bash("broken")
    with pytest.raises(Exception, match="min_ratin"):
        dry_run.check_train(["data.preprocessing.min_ratin=4"], tmp_path / "run")
    loss = ["model.loss._target_=rectorch.models.components.pair_losses.MaxMarginLoss", "+model.loss.marginx=0.1"]
    with pytest.raises(AssertionError, match="marginx"):
        dry_run.check_train(["experiment=pinsage_ml1m", "~model.loss.temperature", *loss], tmp_path / "run")
    with pytest.raises(SystemExit):
        dry_run.parse_script(PROJECT_ROOT / "scripts/pinsage_report.py", [str(tmp_path), "--top", "5"], monkeypatch)


# --- fenced blocks --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "block"), _params("bash", BASH))
def test_bash_block(runner: Runner, name: str | None, block: document.Block) -> None:
    if name is None:
        name = block.name
        runner.add(name, block)
    runner.bash(name)


def test_own_configs_by_search_path(runner: Runner, tmp_path: Path) -> None:
    """The own-configs block's alternative (`# or: hydra.searchpath=[file://$PWD/myconf]`) finds the same files."""
    workdir = runner.bash("own configs").workdir
    (override,) = re.findall(r"#\s*or:\s*(hydra\.searchpath=\S+)", BASH["own configs"].code)
    command = re.search(r"^rectorch-train .*?(?=\s+#|$)", BASH["own configs"].code, re.M)[0].split()
    args = [arg for arg in command[1:] if not arg.startswith("--config-dir") and arg != "myconf"]
    (cfg,) = dry_run.check_train([*args, override.replace("$PWD", str(workdir))], tmp_path / "run")
    assert cfg.data.path == f"{workdir}/abs/shop/events.parquet" and cfg.trainer.max_epochs == 50


def _check_load_run(ran: Ran, values: dict[str, Any]) -> None:
    (run_dir,) = (ran.workdir / "logs/runs").iterdir()
    record = json.loads((run_dir / "run.json").read_text())
    assert values["run.catalog.item_ids[1:11]"] == np.load(run_dir / "catalog.npz")["item_ids"][1:11].tolist()
    assert values["run.config.model.encoder.dim"] == record["config"]["model"]["encoder"]["dim"]
    assert values["run.model"].startswith(record["config"]["model"]["_target_"].rsplit(".", 1)[1] + "(")


def _check_compare(ran: Ran, values: dict[str, Any]) -> None:
    plots = values['comparison.write_plots("plots")']
    assert len(plots) == 4 and all(path.endswith(".png") and (ran.workdir / path).is_file() for path in plots)
    assert {row["model"] for row in values["comparison.table"]} == {"popularity", "sasrec"}  # the setup's runs


def _check_recommender(ran: Ran, values: dict[str, Any]) -> None:
    from rectorch.serving import Recommender

    catalog = Recommender.from_bundle(ran.workdir / "export/sasrec-synthetic-quick").catalog
    wanted = re.search(r'filters=\{"category": \["(\w+)"\]\}', PYTHON["Recommender"].code)[1]
    allowed = {item for item in catalog.ids if catalog.categories[catalog.category[catalog.row_of[item]]] == wanted}
    answer = next(value for expr, value in values.items() if expr.startswith("rec.recommend("))
    # k=10 of the category's items, less the history and the excluded one (the shrunk catalog may hold fewer)
    assert len(answer["items"]) == min(10, len(allowed - {"7", "12", "48"})) > 0
    assert set(answer["items"]) <= allowed - {"7", "12", "48"}
    similar = values['rec.similar_items("12", k=10)']
    assert len(similar["items"]) == 10 and "12" not in similar["items"]


CHECK_PYTHON = {"load_run": _check_load_run, "compare()": _check_compare, "Recommender": _check_recommender}


@pytest.mark.parametrize(("name", "block"), _params("python", PYTHON))
def test_python_block(runner: Runner, name: str | None, block: document.Block) -> None:
    assert name is not None, f"python block {block.name} has no spec in tests/test_readme.py BLOCKS"
    ran = runner.bash(BLOCKS[name].after)
    code = block.code
    if name == "load_run":  # the README's example run directory -> the one the quickstart block trained
        (run_dir,) = (ran.workdir / "logs/runs").iterdir()
        code = re.sub(r"logs/runs/[\w.-]+", f"logs/runs/{run_dir.name}", code)
    values = run_python(name, code, ran.workdir, block_env(ran.workdir, ran.logs), BLOCK_TIMEOUT)
    CHECK_PYTHON[name](ran, values)


# --- inline commands ------------------------------------------------------------------------------------------

#: placeholders that stand for a trained run or its bundle: the tiny run the export block made
RUN_PLACEHOLDERS = {
    r"<(?:run|run dir|that run|run above|pinsage run dir|a SASRec ML-1M run)>": "{run}",
    r"<epoch-107 best\.ckpt>|\bFILE\b": "{ckpt}",
    r"\bbundle=path\b": "bundle={bundle}",
}
OTHER_PLACEHOLDERS = {
    r"<dir>": "{out}",
    r"<(?:overrides|same overrides)>|(?<!\S)\.\.\.(?!\S)": "",  # "your overrides here"
    r"\[(--[^\]]*)\]": r"\1",  # an optional part of a synopsis: given
}
SPANS = document.command_spans(TEXT)
COMPARE_SPANS = [span for span in SPANS if span.text.startswith("rectorch-compare")]


def _span_id(span: document.Span) -> str:
    return f"L{span.line}:{' '.join(span.text.split())[:70]}"


def _needs_run(span: document.Span) -> bool:
    return span.text.startswith("rectorch-eval") or any(re.search(p, span.text) for p in RUN_PLACEHOLDERS)


def span_argv(span: document.Span, **values: str) -> list[str]:
    """The span's command with its placeholders filled in from ``values``."""
    text = span.text
    for pattern, value in {**RUN_PLACEHOLDERS, **OTHER_PLACEHOLDERS}.items():
        if re.search(pattern, text):
            text = re.sub(pattern, value.format(**values) if "{" in value else value, text)
    argv = document.Span(text, span.line).argv
    left = document.placeholders(" ".join(argv))
    assert not left, f"placeholders without a value in tests/test_readme.py: {sorted(left)}"
    return argv


@pytest.fixture(scope="module")
def tiny_run(runner: Runner) -> dict[str, str]:
    """The run and bundle the export block made: what `<run>`, `<that run>`, `bundle=path` stand for."""
    workdir = runner.bash("export and serve").workdir
    run = workdir / "logs/runs/quick"
    bundle = workdir / "export/sasrec-synthetic-quick"
    return {"run": str(run), "ckpt": str(run / "checkpoints/best.ckpt"), "bundle": str(bundle)}


def _check_serve(args: list[str], workdir: Path) -> None:
    """`rectorch-serve ...` parses against the real bundle; each key=value given is the value it serves with."""
    from rectorch.serving.cli import parse_settings

    (workdir / "serve.yaml").write_text("port: 9000\nrecommend: {mmr_lambda: 0.3}\n")  # a --settings file it names
    settings = parse_settings(args)
    for given in (arg for arg in args if "=" in arg and not arg.startswith("bundle=")):
        key, value = given.split("=", 1)
        node = settings
        for part in key.split("."):
            node = getattr(node, part)
        assert str(node) == value, f"{given}: serves with {node}"  # the command line wins over --settings


@pytest.mark.parametrize("span", SPANS, ids=[_span_id(span) for span in SPANS])
def test_inline_command(span: document.Span, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch) -> None:
    values = {"out": str(tmp_path / "out"), **(request.getfixturevalue("tiny_run") if _needs_run(span) else {})}
    argv = span_argv(span, **values)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RECTORCH_HOME", str(tmp_path))
    command, args = argv[0], argv[1:]
    if command == "rectorch-train":
        dry_run.check_train(args, tmp_path / "run")
    elif command == "rectorch-export":
        dry_run.check_export(args, tmp_path / "export")
    elif command == "rectorch-eval":
        from rectorch.training.evaluate import main

        main(args)  # evaluates the tiny run for real (seconds)
        assert "ndcg@10" in json.loads((Path(values["run"]) / "eval.json").read_text())["test"]
    elif command == "rectorch-serve":
        _check_serve(args, tmp_path)
    elif command == "rectorch-compare":
        from rectorch.compare.cli import main

        namespace, _ = dry_run.parse_with(lambda: main(args), monkeypatch)  # runs: test_inline_compare_runs
        for flag in (arg for arg in args if arg.startswith("--")):
            assert getattr(namespace, flag[2:].replace("-", "_")), f"{flag} parsed as unset"
    elif argv[:2] == ["python", "-m"]:
        dry_run.parse_module(argv[2], argv[3:], monkeypatch)
    else:
        dry_run.check_script(argv, tmp_path / "run", monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("span", COMPARE_SPANS, ids=[_span_id(span) for span in COMPARE_SPANS])
def test_inline_compare_runs(span: document.Span, runner: Runner, tmp_path: Path, monkeypatch) -> None:
    """The leaderboard commands, run on the store the compare block filled with ML-1M runs."""
    from rectorch.compare.cli import main

    workdir = runner.bash("compare").workdir
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("RECTORCH_HOME", str(workdir))
    argv = span_argv(span, out=str(tmp_path / "out"))
    assert main(argv[1:]) == 0
    if "--out" in argv:
        assert "ml1m" in (tmp_path / "out/leaderboard.md").read_text()
