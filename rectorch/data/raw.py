"""What a source reader returns: interactions in file order, plus optional side features."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd


@dataclass
class RawData:
    """Interactions as read from disk, before any id mapping or filtering.

    Args:
        name: dataset name recorded in every protocol (``ml1m``, ``synthetic``, ...).
        interactions: columns ``user_id``, ``item_id`` (external ids, str or int), optional ``timestamp``
            (int64 seconds) and ``rating`` (float), rows in file order; a ``polars.LazyFrame`` of those
            columns when a source's ``scan()`` made it.
        item_features: indexed by external item id. Each column is categorical (int/str scalars),
            multi-valued categorical (Python lists of str/int, e.g. genres), or numeric (float).
        user_features: indexed by external user id, same column kinds.
        files: the files read, so a cache can be keyed on their content.
        category_feature: name of the item feature used as "category" by diversity metrics and filters.
    """

    name: str
    interactions: Any  # pd.DataFrame, or polars.LazyFrame from scan()
    item_features: pd.DataFrame | None = None
    user_features: pd.DataFrame | None = None
    files: list[Path] = field(default_factory=list)
    category_feature: str | None = None
