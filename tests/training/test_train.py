"""End-to-end training through the composed Hydra config, as ``rectorch-train`` runs it."""

import gzip
import json
import math
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import yaml
from omegaconf import OmegaConf, open_dict

from rectorch.resolvers import config_dir
from rectorch.training.train import train
from tests.conftest import data_dir

MODEL_CONFIGS = sorted(p.stem for p in (config_dir() / "model").glob("*.yaml"))
RECIPES = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))
# single-model recipes; the two-stage ones (channels → ranker) are checked below and in tests/ranking
EXPERIMENTS = [name for name in RECIPES if not name.startswith("two_stage_")]
TWO_STAGE = [name for name in RECIPES if name.startswith("two_stage_")]

# what a recipe's name promises: <model>_<dataset>[_variant]
MODEL_CLASSES = {
    "bert4rec": "rectorch.models.bert4rec.BERT4RecModule",
    "ease": "rectorch.models.ease.EASEModule",
    "pinsage": "rectorch.models.pinsage.PinSageModule",
    "popularity": "rectorch.models.popularity.PopularityModule",
    "sasrec": "rectorch.models.sasrec.SASRecModule",
    "two_tower": "rectorch.models.two_tower.TwoTowerModule",
}
SOURCES = {  # dataset token -> (source class, folder under RECTORCH_DATA_DIR, interactions file, users kept)
    "ml1m": ("rectorch.data.movielens.MovieLens1MSasrecSource", "ml-1m", "ml-1m.txt.gz", 120),
    "beauty": ("rectorch.data.sources.BeautySource", "amazon-beauty-bert4rec", "beauty.txt.gz", 400),
    "ml100k": ("rectorch.data.movielens.MovieLens100KSource", "ml-100k", "u.data", 100),
}
LOSSES = "rectorch.models.components.sequence_losses."
RECIPE_LOSSES = {"bce": "BCELoss", "sampled": "SampledSoftmaxLoss"}  # sequence recipes otherwise use full CE


class CaptureTest(L.Callback):
    """Keeps the model and datamodule of the last ``trainer.test`` so a test can recompute its metrics."""

    last: tuple[Any, Any] | None = None

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        CaptureTest.last = (pl_module, trainer.datamodule)


def ndcg_bounds(scores: torch.Tensor, targets: torch.Tensor, seen: torch.Tensor, k: int) -> tuple[float, float]:
    """Mean NDCG@k of one target per user by brute force, seen items and padding excluded.

    Tied scores may rank either way: the bounds put the target after, then before, every tie.
    """
    worst, best = [], []
    for row, target, history in zip(scores, targets.reshape(len(scores), -1)[:, 0], seen, strict=True):
        excluded = {int(i) for i in history if int(i) != int(target)} | {0}
        others = torch.tensor([float(row[i]) for i in range(len(row)) if i not in excluded and i != int(target)])
        above, tied = int((others > row[target]).sum()), int((others == row[target]).sum())
        worst.append(1 / math.log2(above + tied + 2) if above + tied < k else 0.0)
        best.append(1 / math.log2(above + 2) if above < k else 0.0)
    return sum(worst) / len(worst), sum(best) / len(best)


@pytest.mark.parametrize("model", MODEL_CONFIGS)
def test_fast_dev_run_every_model(compose_train, model: str) -> None:
    """The logged test NDCG@10 equals a brute-force ranking of the tested batch by the trained model."""
    cfg = compose_train(f"model={model}", "debug=fast_dev_run")
    with open_dict(cfg):
        cfg.callbacks = {"capture": {"_target_": f"{__name__}.CaptureTest"}}
    CaptureTest.last = None
    results = train(cfg)
    assert set(results["test"]) >= {"ndcg@10", "hr@10", "mrr@10", "coverage@10", "pop_bias@10"}
    module, datamodule = CaptureTest.last
    module.eval()
    batch = next(iter(datamodule.test_dataloader()))  # fast_dev_run tests exactly one batch
    with torch.no_grad():
        table = module.item_vectors()  # first: PinSage's query encoder reads the table it refreshes
        scores = module.encode_query(**batch["query"]) @ table.T
    low, high = ndcg_bounds(scores, batch["targets"], batch["seen"], k=10)
    assert low - 1e-5 <= results["test"]["ndcg@10"] <= high + 1e-5, (low, high)
    assert results["test"]["ndcg@10"] > 0  # even random scores hit ~9 % of a batch of 256 users over 120 items


def recipe(name: str) -> tuple[dict[str, str], dict[str, Any]]:
    """An experiment file's group choices (``override /data: ...``) and its values, parents merged first."""
    text = yaml.safe_load((config_dir() / "experiment" / f"{name}.yaml").read_text())
    groups: dict[str, str] = {}
    values = OmegaConf.create()
    for entry in text.pop("defaults", []):
        if isinstance(entry, str):  # a parent recipe
            parent_groups, parent_values = recipe(entry)
            groups.update(parent_groups)
            values = OmegaConf.merge(values, parent_values)
        else:
            ((key, choice),) = entry.items()
            groups[key.removeprefix("override /")] = choice
    return groups, OmegaConf.to_container(OmegaConf.merge(values, text))


def leaves(node: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a.b.c": value}`` for every non-dict value of a nested dict."""
    flat = {}
    for key, child in node.items():
        path = f"{prefix}{key}"
        flat.update(leaves(child, f"{path}.") if isinstance(child, dict) else {path: child})
    return flat


def promised(experiment: str) -> tuple[str, str]:
    """``(model family, dataset)`` read from a recipe's name."""
    family = max((m for m in MODEL_CLASSES if experiment.startswith(f"{m}_")), key=len)
    dataset = next(token for token in experiment[len(family) + 1 :].split("_") if token in SOURCES)
    return family, dataset


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_to_its_recipe(compose_train, experiment: str) -> None:
    """The composed config holds the recipe's own data source, model, loss and every value its YAML sets."""
    cfg = compose_train(f"experiment={experiment}", small=False)
    groups, values = recipe(experiment)
    family, dataset = promised(experiment)
    assert cfg.data.source._target_ == SOURCES[dataset][0]
    assert cfg.model._target_ == MODEL_CLASSES[family]
    assert groups["data"] == dataset and groups["model"] == family
    if family in ("sasrec", "bert4rec"):
        loss = next((c for token, c in RECIPE_LOSSES.items() if token in experiment), "FullSoftmaxLoss")
        assert cfg.model.loss._target_ == LOSSES + loss
    for key, value in leaves(values).items():
        assert OmegaConf.select(cfg, key) == value, key
    assert cfg.trainer.get("fast_dev_run") in (None, False)  # nothing of debug leaks into a recipe


@pytest.mark.parametrize("experiment", TWO_STAGE)
def test_every_two_stage_recipe_trains_its_channels_on_its_own_data(compose_train, experiment: str) -> None:
    """A two-stage recipe names its dataset's source, a ranker, and run channels whose training overrides compose
    to a single-model recipe of the same dataset."""
    from hydra import compose, initialize_config_dir

    cfg = compose_train(f"experiment={experiment}", small=False)
    dataset = experiment.removeprefix("two_stage_")
    assert dataset == "synthetic" or cfg.data.source._target_ == SOURCES[dataset][0]
    assert "_target_" in cfg.ranker and cfg.two_stage._target_ == "rectorch.ranking.pipeline.TwoStage"
    runs = [c for c in cfg.two_stage.channels.values() if c._target_.endswith("RunChannel")]
    assert runs and all(c.run is None for c in runs)
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        for channel in runs:
            trained = compose(config_name="train", overrides=list(channel.train))
            assert trained.model._target_ in MODEL_CLASSES.values()
            if dataset != "synthetic":
                assert trained.data.source._target_ == cfg.data.source._target_


@pytest.fixture(scope="module")
def shrunk_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real data folders with each interactions file cut to its first users; side files linked."""
    root = data_dir()
    if root is None:
        pytest.skip("RECTORCH_DATA_DIR is not set: the recipes' own data is not available")
    shrunk = tmp_path_factory.mktemp("data")
    for _, folder, interactions, users in SOURCES.values():
        if not (root / folder / interactions).exists():
            continue
        (shrunk / folder).mkdir()
        for entry in (root / folder).iterdir():
            if entry.name != interactions:
                (shrunk / folder / entry.name).symlink_to(entry)
        opener = gzip.open if interactions.endswith(".gz") else open
        with opener(root / folder / interactions, "rt") as src, opener(shrunk / folder / interactions, "wt") as dst:
            dst.writelines(line for line in src if int(line.split()[0]) <= users)
    return shrunk


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_runs_on_its_own_data_shrunk(compose_train, shrunk_data: Path, experiment: str) -> None:
    """Each recipe, unchanged but for fast_dev_run, trains and tests on the first users of its own dataset."""
    family, dataset = promised(experiment)
    _, folder, interactions, users = SOURCES[dataset]
    if not (shrunk_data / folder / interactions).exists():
        pytest.skip(f"{folder}/{interactions} not found under RECTORCH_DATA_DIR")
    cfg = compose_train(f"experiment={experiment}", "debug=fast_dev_run", f"paths.data_dir={shrunk_data}", small=False)
    results = train(cfg)
    assert results["model"].replace("_", "") == family.replace("_", "")
    assert results["protocol"]["dataset"] == dataset and results["protocol"]["users"] == users
    assert "ndcg@10" in results["test"]


def test_run_writes_metrics_and_mlflow(compose_train, tmp_path: Path) -> None:
    import mlflow

    cfg = compose_train("model=ease", "debug=limit")
    results = train(cfg)

    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["protocol"] == results["protocol"]
    assert metrics["protocol"]["dataset"] == "synthetic" and metrics["protocol"]["ranking"] == "full"
    assert metrics["protocol"]["split"] == "loo" and metrics["protocol"]["mask_seen"] is True
    assert metrics["test"]["ndcg@10"] > 0.0 and Path(metrics["checkpoint"]).is_file()

    client = mlflow.MlflowClient(cfg.paths.mlflow_uri)
    run = client.get_run(results["mlflow_run_id"])
    assert run.data.params["model.l2"] == "200.0"
    assert run.data.tags["dataset_fingerprint"] == metrics["dataset_fingerprint"]
    assert run.data.tags["protocol.split"] == "loo" and run.data.tags["model_family"] == "ease"
    assert any(key.startswith("test/ndcg") for key in run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "config.yaml", "checkpoints"} <= artifacts
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "rectorch-synthetic" and run.info.run_name.startswith("ease-")


def test_ease_beats_popularity_on_planted_structure(compose_train) -> None:
    """Personal co-occurrence structure is learnable; popularity cannot see it."""
    scores = {}
    for model in ("popularity", "ease"):
        cfg = compose_train(f"model={model}", "logger=none", "callbacks=none")
        scores[model] = train(cfg)["test"]["ndcg@10"]
    assert scores["ease"] > 1.5 * scores["popularity"], scores
