"""The privacy–utility table and plot: spent epsilons per family, each against its non-private reference."""

import math

from rectorch.compare.privacy import privacy_rows, privacy_table, privacy_utility, spent_epsilon
from rectorch.compare.store import RunSummary

PROTOCOL = {"dataset": "synthetic", "split": "loo", "ranking": "full", "users": 300}


def run(name: str, model: str, test: float, val: float, epsilon: float | None = None) -> RunSummary:
    results = {"protocol": PROTOCOL, "test": {"ndcg@10": test}, "val": {"ndcg@10": val}}
    if epsilon is not None:
        results["privacy"] = {"epsilon": epsilon, "delta": 1 / 300, "noise_multiplier": 1.5}
    return RunSummary(name, name, "rectorch-synthetic", model, {}, {}, results)


RUNS = [
    run("sasrec-public-a", "sasrec", test=0.20, val=0.21),
    run("sasrec-public-b", "sasrec", test=0.30, val=0.19),  # better test, worse validation: not the reference
    run("sasrec-eps3", "sasrec", test=0.15, val=0.14, epsilon=2.99),
    run("sasrec-eps1", "sasrec", test=0.10, val=0.09, epsilon=0.98),
    run("twotower-eps3", "twotower", test=0.12, val=0.11, epsilon=2.97),
    run("ease-public", "ease", test=0.18, val=0.17),  # no private run: not in the curve
]


def test_rows_order_by_epsilon_and_keep_the_share_of_the_validation_chosen_reference() -> None:
    rows = privacy_rows(RUNS)
    assert [(r["model"], r["run"]) for r in rows] == [
        ("sasrec", "sasrec-eps1"),
        ("sasrec", "sasrec-eps3"),
        ("sasrec", "sasrec-public-a"),
        ("twotower", "twotower-eps3"),
    ]
    assert [round(r["kept"], 6) for r in rows[:3]] == [0.5, 0.75, 1.0]
    assert rows[3]["kept"] is None and math.isinf(rows[2]["epsilon"]) and spent_epsilon(RUNS[2]) == 2.99


def test_table_and_plot() -> None:
    table = privacy_table(RUNS)
    assert "| sasrec | ∞ |" in table and "| sasrec | 0.98 | 3.33e-03 | 1.500 | 0.1000 | 50% | sasrec-eps1 |" in table
    figure = privacy_utility(RUNS)
    (ax,) = figure.axes
    assert ax.get_xscale() == "log"
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["sasrec"].get_xdata()) == [0.98, 2.99] and list(lines["sasrec"].get_ydata()) == [0.10, 0.15]
    assert list(lines["sasrec, non-private"].get_ydata()) == [0.20, 0.20] and "twotower" in lines
