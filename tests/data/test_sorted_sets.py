"""The sort-based set operations answer as numpy's own."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from rectorch.data.sorted_sets import has_duplicates, member_of

keys = st.lists(st.integers(-(2**62), 2**62) | st.integers(0, 20), max_size=60).map(lambda v: np.array(v, np.int64))


@given(values=keys, pool=keys)
def test_member_of_equals_isin(values: np.ndarray, pool: np.ndarray) -> None:
    assert np.array_equal(member_of(values, pool), np.isin(values, pool))


@given(values=keys)
def test_has_duplicates_equals_unique(values: np.ndarray) -> None:
    assert has_duplicates(values) == (len(np.unique(values)) < len(values))
