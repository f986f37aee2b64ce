"""The ``conf/data`` group as a user overrides it: every preprocessing field, and the csv time-column choice."""

import dataclasses
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate

from rectorch.data.errors import DataError
from rectorch.data.prepare import Preprocessing
from rectorch.resolvers import config_dir

DATA_CONFIGS = sorted(p.stem for p in (config_dir() / "data").glob("*.yaml"))
FIELDS = [f.name for f in dataclasses.fields(Preprocessing)]
NEW_VALUES = {"dedup": "last", "min_rating": 4.0, "user_core": 3, "item_core": 7, "engine": "polars"}


def test_new_values_differ_from_every_default() -> None:
    assert set(NEW_VALUES) == set(FIELDS)  # a new Preprocessing field needs a value here
    assert all(getattr(Preprocessing(), name) != value for name, value in NEW_VALUES.items())


@pytest.mark.parametrize("data", DATA_CONFIGS)
def test_every_preprocessing_field_is_listed_and_overridable_without_plus(compose_train, data: str) -> None:
    node = compose_train(f"data={data}", small=False).data.preprocessing
    assert set(node) - {"_target_"} == set(FIELDS), f"conf/data/{data}.yaml preprocessing lists {sorted(node)}"
    for name, value in NEW_VALUES.items():
        composed = compose_train(f"data={data}", f"data.preprocessing.{name}={value}", small=False)
        assert getattr(instantiate(composed.data.preprocessing), name) == value


def test_readme_min_rating_override(compose_train) -> None:
    cfg = compose_train("data=ml1m_raw", "data.preprocessing.min_rating=4", small=False)
    assert instantiate(cfg.data.preprocessing) == Preprocessing(min_rating=4, item_core=5)
    with pytest.raises(ConfigCompositionException, match="min_rate"):
        compose_train("data=ml1m_raw", "data.preprocessing.min_rate=4", small=False)  # a typo still fails


def test_csv_with_a_timestamp_column_needs_a_choice(compose_train, tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    path.write_text("user_id,item_id,timestamp\n" + "".join(f"u{u % 7},i{u // 7},{10**9 + u}\n" for u in range(70)))
    data = ["data=csv", f"data.path={path}"]
    with pytest.raises(DataError, match=r"reviews\.csv.*'timestamp'.*data\.time_col=timestamp.*data\.time_col=none"):
        instantiate(compose_train(*data, small=False).data).prepare_data()
    for choice in ("timestamp", "none"):
        instantiate(compose_train(*data, f"data.time_col={choice}", small=False).data).prepare_data()
