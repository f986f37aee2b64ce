"""DP-SGD (``privacy=dp``): accounting equals Opacus' analysis, clipping bounds every example, per-example gradients
are each example's own (refused otherwise), private models still learn the planted structure, bad settings fail
as one line."""

import csv
import functools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("opacus")
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent
from opacus.optimizers import DPOptimizer

from rectorch.data.csr import Csr
from rectorch.data.prepared import FeatureTable
from rectorch.data.spec import DataSpec, FeatureSpec
from rectorch.data.views import PairView, SequenceView
from rectorch.export.pipeline import source
from rectorch.models.components.history_pooling import AttentionPooling
from rectorch.models.components.hstu import HSTUEncoder
from rectorch.models.components.retrieval_losses import InBatchSoftmaxLoss
from rectorch.models.components.sequence_encoder import SequenceEncoder
from rectorch.models.components.sequence_losses import FullSoftmaxLoss
from rectorch.models.components.towers import ItemTower, UserTower
from rectorch.models.sasrec import SASRecModule
from rectorch.models.two_tower import TwoTowerModule
from rectorch.runs import load_run
from rectorch.training.per_example import PerExampleHooks, verify_per_example_gradients
from rectorch.training.privacy import DifferentialPrivacy, PrivacySettings
from rectorch.training.train import train

pytestmark = pytest.mark.filterwarnings("ignore:.*self.log.*", "ignore:.*Full backward hook.*")

QUIET = ["logger=none", "callbacks=none"]
SASREC = ["model=sasrec", "model.view.max_len=20", "model.optimizer.lr=0.005", "trainer.max_epochs=5"]


# --- small models built by hand ----------------------------------------------------------------------------
def tiny_sasrec(untied: bool = True, positions_from_start: bool = True, hstu: bool = False) -> SASRecModule:
    torch.manual_seed(0)
    encoder = functools.partial(
        HSTUEncoder if hstu else SequenceEncoder, dim=16, num_blocks=1, num_heads=2, dropout=0.0, init_std=0.02,
        positions_from_start=positions_from_start,
    )  # fmt: skip
    spec = DataSpec("tiny", num_users=8, num_items=30)
    return SASRecModule(spec, SequenceView(max_len=10), encoder, FullSoftmaxLoss(), untied_output=untied).train()


def sequences(rows: int = 6) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    items = torch.randint(1, 31, (rows, 11))
    for row in range(rows):
        items[row, : row + 1] = 0  # right-aligned, every row its own length
    return {"items": items}


ITEM_FEATURES = {"category": FeatureSpec("categorical", 4), "tags": FeatureSpec("multi", 6, 2)}
TOWER_SPEC = DataSpec("towers", num_users=5, num_items=8, item_features=ITEM_FEATURES)


def tiny_two_tower(in_batch: bool) -> TwoTowerModule:
    torch.manual_seed(0)
    model = TwoTowerModule(
        TOWER_SPEC,
        PairView(history_len=4),
        functools.partial(ItemTower, id_dim=8, feature_dim=4, hidden=[16], out_dim=8),
        functools.partial(UserTower, pooler=AttentionPooling(8, 4), hidden=[16], out_dim=8),
        InBatchSoftmaxLoss(temperature=0.1, uniform_negatives=0 if in_batch else 5, in_batch=in_batch),
    )
    rng = np.random.default_rng(0)
    items = FeatureTable(
        columns={"category": rng.integers(0, 4, 9), "tags": rng.integers(0, 6, (9, 2))}, kinds=ITEM_FEATURES
    )
    model.fit_catalog(items, FeatureTable(), Csr(np.array([0, 0, 3, 6, 8, 10, 12]), rng.integers(1, 9, 12)))
    return model.train()


def pairs() -> dict:
    return {
        "users": torch.tensor([1, 2, 3, 4]),
        "history": torch.tensor([[0, 0, 1, 2], [0, 3, 4, 5], [0, 0, 0, 6], [1, 2, 3, 4]]),
        "item": torch.tensor([3, 6, 7, 8]),
        "user_features": {},
        "item_features": {},
    }


def flat_gradients(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    model.zero_grad()
    model.training_step(batch, 0).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()])


# --- accounting ----------------------------------------------------------------------------------------------
def test_a_resumed_ledger_spends_the_closed_form_epsilon_of_the_gaussian_mechanism() -> None:
    """Without subsampling the Rényi DP of T Gaussian steps is alpha T / (2 sigma^2), converted to (eps, delta)
    by Balle et al. (2020)'s bound at the best order; the ledger travels through a checkpoint's state."""
    private = DifferentialPrivacy(PrivacySettings(epsilon=3.0, delta=1e-5), epochs=1)
    private.load_state_dict({"history": [[2.0, 1.0, 50]], "delta": 1e-5})
    resumed = DifferentialPrivacy(PrivacySettings(epsilon=3.0), epochs=1)
    resumed.load_state_dict(private.state_dict())
    alphas = np.array(RDPAccountant.DEFAULT_ALPHAS)
    eps = alphas * 50 / (2 * 2.0**2) - (np.log(1e-5) + np.log(alphas)) / (alphas - 1) + np.log1p(-1 / alphas)
    assert resumed.spent_epsilon() == pytest.approx(private.spent_epsilon()) == pytest.approx(eps.min(), rel=1e-9)


def read_epochs(log_dir: Path) -> list[float]:
    [metrics] = log_dir.rglob("metrics.csv")
    with open(metrics) as handle:
        return [float(row["privacy/epsilon"]) for row in csv.DictReader(handle) if row.get("privacy/epsilon")]


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_dp_sasrec_spends_what_opacus_counts_and_beats_popularity(compose_train, tmp_path, accountant) -> None:
    csv_logger = ["+logger.csv._target_=lightning.pytorch.loggers.CSVLogger", f"+logger.csv.save_dir={tmp_path}/csv"]
    cfg = compose_train(*SASREC, "privacy=dp", f"privacy.accountant={accountant}", *QUIET, *csv_logger)
    results = train(cfg)
    spent = results["privacy"]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["privacy"] == spent
    assert spent["steps"] == 5 * spent["steps_per_epoch"] and spent["sample_rate"] == 1 / spent["steps_per_epoch"]
    assert spent["delta"] == 1 / 300 and spent["users"] == spent["examples"] == 300  # one sequence per user
    ledger = (RDPAccountant if accountant == "rdp" else PRVAccountant)()
    ledger.history = [(spent["noise_multiplier"], spent["sample_rate"], spent["steps"])]
    assert spent["epsilon"] == pytest.approx(ledger.get_epsilon(delta=spent["delta"]), rel=1e-9)
    if accountant == "rdp":  # Opacus' analysis functions, without its accountant class
        rdp = compute_rdp(
            q=spent["sample_rate"], noise_multiplier=spent["noise_multiplier"], steps=spent["steps"],
            orders=RDPAccountant.DEFAULT_ALPHAS,
        )  # fmt: skip
        assert spent["epsilon"] == pytest.approx(get_privacy_spent(
            orders=RDPAccountant.DEFAULT_ALPHAS, rdp=rdp, delta=spent["delta"])[0], rel=1e-9)  # fmt: skip
    assert 3.0 - 0.05 < spent["epsilon"] <= 3.0  # the planned run spends the target budget
    per_epoch = read_epochs(tmp_path / "csv")
    assert len(per_epoch) == 5 and per_epoch[0] > 0 and per_epoch == sorted(per_epoch)
    assert per_epoch[-1] == pytest.approx(spent["epsilon"])
    if accountant == "rdp":
        assert source(load_run(tmp_path / "run"))["privacy"] == spent  # the bundle's manifest (and the web one's)
        popularity = train(compose_train("model=popularity", *QUIET))["val"]["ndcg@10"]
        assert results["val"]["ndcg@10"] > 1.5 * popularity, (results["val"]["ndcg@10"], popularity)


def test_dp_two_tower_beats_popularity(compose_train) -> None:
    dp = ["privacy=dp", "model.loss.uniform_negatives=31", "model.optimizer.lr=0.005", "data.batch_size=256"]
    results = train(compose_train("model=two_tower", *dp, "trainer.max_epochs=1", *QUIET))
    popularity = train(compose_train("model=popularity", *QUIET))["val"]["ndcg@10"]
    assert results["privacy"]["examples"] > results["privacy"]["users"]  # one example per interaction
    assert 0 < results["privacy"]["epsilon"] <= 3.0
    assert results["val"]["ndcg@10"] > 1.5 * popularity, (results["val"]["ndcg@10"], popularity)


def test_physical_batches_add_up_to_the_same_steps(compose_train) -> None:
    """Sampled batches cut into pieces of 8 examples train the model that uncut batches train (1024 > any
    batch; both runs read batches the same way, so they draw the same random numbers)."""
    weights = []
    for cut in ("1024", "8"):
        cfg = compose_train(*SASREC, "trainer.max_epochs=2", "model.encoder.dropout=0", "privacy=dp", *QUIET,
                            f"privacy.max_physical_batch_size={cut}")  # fmt: skip
        results = train(cfg)
        assert results["privacy"]["steps"] == 2 * results["privacy"]["steps_per_epoch"]
        weights.append(torch.load(results["checkpoint"], weights_only=True)["state_dict"])
    for name, value in weights[0].items():
        assert torch.allclose(value, weights[1][name], atol=1e-5), name


def test_a_resumed_run_keeps_counting_the_steps_it_took_before(compose_train, tmp_path) -> None:
    """Stopped after 2 of 4 planned epochs, then resumed from last.ckpt: the ledger covers all 4."""
    planned = [*SASREC, "trainer.max_epochs=4", "privacy=dp", "logger=none", "callbacks.early_stopping=null"]
    first = train(compose_train(*planned, "+trainer.max_steps=10"))["privacy"]  # 5 steps per epoch
    assert first["steps"] == 10 and first["epsilon"] < 3.0 - 0.5
    resumed = train(compose_train(*planned, f"ckpt_path={tmp_path}/run/checkpoints/last.ckpt"))["privacy"]
    assert resumed["steps"] == 20 and resumed["noise_multiplier"] == first["noise_multiplier"]
    assert 3.0 - 0.05 < resumed["epsilon"] <= 3.0


# --- clipping and per-example gradients -----------------------------------------------------------------------
def test_clipping_bounds_every_example_and_the_step_is_their_clipped_mean() -> None:
    """Reference: each example's own gradient from a backward pass of its own, clipped by hand."""
    model, batch = tiny_sasrec(), sequences()
    own = torch.stack([flat_gradients(model, {"items": batch["items"][[row]]}) for row in range(6)])
    norms = own.norm(dim=1)
    bound = float(norms.median())  # half the examples get clipped
    hooks = PerExampleHooks(model)
    optimizer = DPOptimizer(
        torch.optim.SGD(model.parameters(), lr=1.0), noise_multiplier=0.0, max_grad_norm=bound, expected_batch_size=6
    )
    optimizer.zero_grad()
    model.training_step(batch, 0).backward()
    per_example = torch.cat([p.grad_sample.flatten(1) for p in model.parameters()], dim=1)
    assert torch.allclose(per_example, own, rtol=1e-4, atol=1e-7)
    optimizer.pre_step()  # clip, add (zero) noise, average: the gradient the step applies
    applied = torch.cat([p.grad.flatten() for p in model.parameters()])
    clipped = own * (bound / norms).clamp(max=1.0)[:, None]
    assert (norms > bound).sum() >= 2 and (clipped.norm(dim=1) <= bound * (1 + 1e-5)).all()
    assert torch.allclose(applied, clipped.sum(dim=0) / 6, rtol=1e-4, atol=1e-8)
    hooks.cleanup()


@pytest.mark.parametrize(
    ("make", "batch"),
    [
        (tiny_sasrec, sequences),
        (functools.partial(tiny_sasrec, hstu=True), sequences),
        (functools.partial(tiny_two_tower, in_batch=False), pairs),
    ],
    ids=["sasrec untied", "sasrec untied, HSTU blocks", "two-tower, attention pooling, per-example negatives"],
)
def test_per_example_gradients_of_dp_ready_models_are_each_examples_own(make, batch) -> None:
    model = make()
    hooks = PerExampleHooks(model)
    verify_per_example_gradients(model, batch())
    hooks.cleanup()


@pytest.mark.parametrize(
    ("make", "batch", "message"),
    [
        (functools.partial(tiny_sasrec, untied=False), sequences, "encoder.item_embedding.weight differs"),
        (functools.partial(tiny_sasrec, positions_from_start=False), sequences, "position_embedding.weight got no"),
        (functools.partial(tiny_two_tower, in_batch=True), pairs, "item_tower.id_embedding.weight differs"),
    ],
    ids=["tied output table", "positions from a bare weight slice", "in-batch negatives"],
)
def test_models_whose_per_example_gradients_are_wrong_are_refused(make, batch, message) -> None:
    model = make()
    hooks = PerExampleHooks(model)
    with pytest.raises(ValueError, match=message):
        verify_per_example_gradients(model, batch())
    hooks.cleanup()


# --- bad settings ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["privacy.epsilon=0"], "privacy.epsilon"),
        (["privacy.epsilon=-1"], "privacy.epsilon"),
        (["privacy.epsilon=abc"], "privacy.epsilon"),
        (["privacy.epsilon=inf"], "privacy.epsilon"),
        (["privacy.delta=1"], "privacy.delta"),
        (["privacy.delta=1.5"], "privacy.delta"),
        (["privacy.max_grad_norm=0"], "privacy.max_grad_norm"),
        (["privacy.accountant=gdp"], "privacy.accountant"),
        (["privacy.poisson_sampling=3"], "privacy.poisson_sampling"),
        (["privacy.max_physical_batch_size=0"], "privacy.max_physical_batch_size"),
        (["privacy.secure_rng=true"], "privacy.secure_rng"),
        (["+privacy.epsilonn=3"], "epsilonn"),
        (["model=ease"], "closed form"),
        (["model=popularity"], "closed form"),
        (["trainer.max_epochs=-1"], "trainer.max_epochs"),
        (["+trainer.accumulate_grad_batches=2"], "trainer.accumulate_grad_batches"),
        (["+trainer.gradient_clip_val=1.0"], "trainer.gradient_clip_val"),
    ],
)
def test_bad_privacy_settings_are_one_line_naming_the_key(compose_train, tmp_path, overrides, fragment) -> None:
    with pytest.raises(ValueError) as raised:
        train(compose_train("privacy=dp", *overrides, *QUIET))
    message = str(raised.value)
    assert fragment in message and "\n" not in message, message
    assert not (tmp_path / "run").exists()


def test_rectorch_train_exits_2_on_a_bad_epsilon(tmp_path) -> None:
    command = [sys.executable, "-m", "rectorch.training.cli", f"paths.log_dir={tmp_path}", "privacy=dp",
               "privacy.epsilon=0", *QUIET]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "rectorch-train: error: ValueError: privacy.epsilon must be" in result.stderr
    assert "Traceback" not in result.stderr
