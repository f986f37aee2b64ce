"""Off-policy replay (issue 17, part 4): ``rectorch-simulate`` on synthetic bundles, and the IPS/SNIPS estimators."""

import json
from pathlib import Path

import numpy as np
import pytest

from rectorch.experiments import analyse, read_impressions
from rectorch.experiments.off_policy import estimate, rounds_from_log
from rectorch.experiments.simulate import load_replay, main
from rectorch.serving.bundle import flat_index, write_bundle
from rectorch.serving.catalog import Catalog
from rectorch.serving.manifest import InputSpec
from tests.serving.conftest import mean_encoder

ITEMS, CLUSTERS, DIM, HISTORY, USERS = 240, 4, 8, 5, 600


def write_arm(path: Path, vectors: np.ndarray, popularity: np.ndarray) -> Path:
    """A mean-of-history bundle whose items are ``vectors``."""
    vectors = vectors.astype(np.float32)
    catalog = Catalog(
        ids=[f"i{r}" for r in range(ITEMS)],
        popularity=popularity,
        category=np.arange(ITEMS) % CLUSTERS + 1,
        categories=["", *(f"c{c}" for c in range(CLUSTERS))],
    )
    table = np.vstack([np.zeros((1, DIM), np.float32), vectors])
    encoder = mean_encoder(table, HISTORY)
    inputs = [InputSpec("history", "int64", ["batch", HISTORY])]
    write_bundle(
        path,
        family="MeanEncoder",
        encoders={"fp32": encoder},
        inputs=inputs,
        index=flat_index(vectors),
        catalog=catalog,
    )
    return path


@pytest.fixture(scope="module")
def replay_setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    """Users whose 5 history items and target share a cluster; arms that know the clusters well, weakly, not at all."""
    root = tmp_path_factory.mktemp("replay")
    rng = np.random.default_rng(0)
    cluster = np.arange(ITEMS) % CLUSTERS
    centers = rng.normal(size=(CLUSTERS, DIM)) * 3
    popularity = rng.integers(1, 100, ITEMS).astype(np.float32)
    arms = {
        "good": write_arm(root / "good", centers[cluster] + rng.normal(size=(ITEMS, DIM)), popularity),
        "weak": write_arm(root / "weak", centers[cluster] + 5 * rng.normal(size=(ITEMS, DIM)), popularity),
        "blind": write_arm(root / "blind", rng.normal(size=(ITEMS, DIM)), popularity),
    }
    sequences = [rng.choice(np.flatnonzero(cluster == rng.integers(CLUSTERS)), HISTORY + 1, replace=False) + 1
                 for _ in range(USERS)]  # fmt: skip
    data = root / "data.npz"
    np.savez(
        data,
        user_ids=np.asarray(["", *(f"u{u}" for u in range(USERS))]),
        item_ids=np.asarray(["", *(f"i{r}" for r in range(ITEMS))]),
        indptr=np.concatenate([[0, 0], np.cumsum([len(s) for s in sequences])]),  # row 0: the padding user
        items=np.concatenate(sequences),
    )
    return data, arms


def run(capsys: pytest.CaptureFixture, *argv: str) -> dict:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_thompson_finds_the_best_arm_and_ips_recovers_each_arms_ctr(
    replay_setup: tuple[Path, dict[str, Path]], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data, arms = replay_setup
    arm_args = [f"--arm={name}={path}" for name, path in arms.items()]
    logs = tmp_path / "logs"
    report = run(capsys, "--data", str(data), *arm_args, "--users", "4000", "--last", "1000", "--log-dir", str(logs))
    truth = {name: row["true_ctr"] for name, row in report["arms"].items()}
    assert truth["good"] > truth["weak"] > truth["blind"] and report["best_arm"] == "good"
    thompson, uniform = report["thompson"], report["uniform"]
    assert thompson["share_last"]["good"] >= 0.8
    assert report["regret_ratio"] <= 0.5
    assert thompson["regret"] == pytest.approx(report["regret_ratio"] * uniform["regret"], rel=1e-3)
    assert all(abs(share - 1 / 3) < 0.04 for share in uniform["share"].values())
    assert sum(thompson["clicks"].values()) > sum(uniform["clicks"].values())
    for name, row in report["arms"].items():
        assert row["ips_ci"][0] <= row["true_ctr"] <= row["ips_ci"][1], name
        assert row["snips_ci"][0] <= row["true_ctr"] <= row["snips_ci"][1], name
    log = read_impressions(logs)  # the uniform split's log, one row per shown item
    assert len(log["impression_id"]) == 4000 * 10 and set(log["propensity"].tolist()) == {1 / 3}
    by_arm = {a["arm"]: a for a in analyse(log, control="good").arms}
    assert sum(a["users"] for a in by_arm.values()) == 4000


def test_replay_is_seeded(replay_setup: tuple[Path, dict[str, Path]], capsys: pytest.CaptureFixture) -> None:
    data, arms = replay_setup
    argv = ["--data", str(data), f"--arm=good={arms['good']}", f"--arm=blind={arms['blind']}", "--users", "500"]
    first, second = run(capsys, *argv), run(capsys, *argv)
    first.pop("seconds"), second.pop("seconds")
    assert first == second
    other = run(capsys, *argv, "--seed", "1")
    assert other["thompson"]["share"] != first["thompson"]["share"]


def test_load_replay_is_leave_one_out(replay_setup: tuple[Path, dict[str, Path]]) -> None:
    replay = load_replay(replay_setup[0])
    with np.load(replay_setup[0]) as arrays:
        first = arrays["item_ids"][arrays["items"][arrays["indptr"][1] : arrays["indptr"][2]]].tolist()
    assert len(replay.users) == USERS and replay.users[0] == 1
    assert replay.histories[0] == first[:-1] and replay.targets[0] == first[-1]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"items": None}, "missing array(s) items"),
        ({"items": lambda items: items + ITEMS}, "items must index item_ids"),
        ({"indptr": lambda indptr: indptr[::-1]}, "indptr must be a non-decreasing offset array"),
    ],
)
def test_bad_data_is_a_one_line_error(
    replay_setup: tuple[Path, dict[str, Path]], tmp_path: Path, change: dict, message: str, capsys
) -> None:
    data, arms = replay_setup
    with np.load(data) as archive:
        arrays = {name: archive[name] for name in archive.files}
    for name, value in change.items():
        if value is None:
            del arrays[name]
        else:
            arrays[name] = value(arrays[name])
    np.savez(tmp_path / "bad.npz", **arrays)
    assert main(["--data", str(tmp_path / "bad.npz"), f"--arm=good={arms['good']}"]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1


def test_bad_arguments(replay_setup: tuple[Path, dict[str, Path]], tmp_path: Path, capsys) -> None:
    data, arms = replay_setup
    assert main(["--data", str(tmp_path / "none.npz"), f"--arm=good={arms['good']}"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["--data", str(data), f"--arm=a={arms['good']}", f"--arm=a={arms['weak']}"]) == 2
    assert "--arm names must be unique" in capsys.readouterr().err
    assert main(["--data", str(data), f"--arm=a={tmp_path}"]) == 2
    (tmp_path / "old.parquet").write_bytes(b"")
    assert main(["--data", str(data), f"--arm=a={arms['good']}", "--log-dir", str(tmp_path)]) == 2
    assert "already holds .parquet files" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--data", str(data), "--arm", "good"])


def test_ips_and_snips_recover_planted_ctrs_under_a_skewed_logging_policy() -> None:
    """Logging probabilities 0.6 / 0.3 / 0.1, CTRs 0.1 / 0.2 / 0.3: both 95 % intervals cover each CTR in
    at least 90 of 100 seeds (a miss is Binomial(100, 0.05); P(more than 10) is about 1 %)."""
    policy, ctrs, names = np.asarray([0.6, 0.3, 0.1]), np.asarray([0.1, 0.2, 0.3]), np.asarray(["a", "b", "c"])
    covered = {("ips", n): 0 for n in names} | {("snips", n): 0 for n in names}
    for seed in range(100):
        rng = np.random.default_rng(seed)
        played = rng.choice(3, 20_000, p=policy)
        rewards = (rng.random(20_000) < ctrs[played]).astype(float)
        for i, name in enumerate(names):
            result = estimate(names[played], rewards, policy[played], name)
            for kind in ("ips", "snips"):
                low, high = result[f"{kind}_ci"]
                covered[kind, name] += low <= ctrs[i] <= high
    assert min(covered.values()) >= 90, covered


def test_rounds_from_log_reward_an_answer_once() -> None:
    log = {
        "impression_id": np.asarray(["x", "x", "y", "y", "z"]),
        "arm": np.asarray(["a", "a", "b", "b", "a"]),
        "clicked": np.asarray([True, True, False, False, False]),
        "propensity": np.asarray([0.5, 0.5, 0.25, 0.25, 0.5]),
    }
    arms, rewards, propensities = rounds_from_log(log)
    assert arms.tolist() == ["a", "b", "a"] and rewards.tolist() == [1.0, 0.0, 0.0]
    assert propensities.tolist() == [0.5, 0.25, 0.5]
    assert estimate(arms, rewards, propensities, "a")["ips"] == pytest.approx((1 / 0.5) / 3)
    assert estimate(arms, rewards, propensities, "a")["snips"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="propensities must lie in"):
        estimate(arms, rewards, np.zeros(3), "a")
