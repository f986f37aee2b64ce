"""Encode raw side-feature frames into a :class:`FeatureTable` over internal ids.

Column kinds follow :class:`RawData`: float columns are numeric, columns holding lists (or tuples or
arrays) are multi-valued, everything else is categorical. Codes are assigned over the surviving entities
only, in sorted value order, starting at 1; 0 means unknown (categorical) or padding (multi).
"""

import numpy as np
import pandas as pd

from rectorch.data.prepared import FeatureTable
from rectorch.data.spec import FeatureKind, FeatureSpec


def feature_kind(column: pd.Series) -> FeatureKind:
    """Kind of a raw feature column, read from its dtype (and its first value for object columns)."""
    if pd.api.types.is_float_dtype(column):
        return "numeric"
    present = column.dropna()
    if len(present) and isinstance(present.iloc[0], list | tuple | np.ndarray):
        return "multi"
    return "categorical"


def encode_features(frame: pd.DataFrame | None, ids: np.ndarray) -> FeatureTable:
    """Features for rows ``0..n`` where ``ids[1:]`` are the external ids (str) of the kept entities.

    Args:
        frame: raw features indexed by external id (any scalar type; compared as str), or None.
        ids: external id of each internal row; ``ids[0]`` is the padding row.
    """
    table = FeatureTable()
    if frame is None:
        return table
    index = frame.index.astype(str)
    rows = pd.Index(index[~index.duplicated()]).get_indexer(ids[1:])
    frame = frame[~index.duplicated()]
    found = rows >= 0
    for name in frame.columns:
        column = frame[name]
        kind = feature_kind(column)
        values = column.iloc[rows[found]]
        if kind == "numeric":
            encoded = np.zeros(len(ids), np.float32)
            encoded[1:][found] = np.nan_to_num(values.to_numpy(np.float32))
            table.kinds[name] = FeatureSpec(kind)
        else:
            encode = _encode_multi if kind == "multi" else _encode_categorical
            encoded, table.vocab[name] = encode(values, np.flatnonzero(found) + 1, len(ids))
            width = encoded.shape[1] if kind == "multi" else 1
            table.kinds[name] = FeatureSpec(kind, cardinality=len(table.vocab[name]), width=width)
        table.columns[name] = encoded
    return table


def _encode_categorical(values: pd.Series, rows: np.ndarray, n: int) -> tuple[np.ndarray, list[str]]:
    if values.dtype == object:
        values = values.where(values.isna(), values.astype(str))
    codes, uniques = pd.factorize(values, sort=True)
    encoded = np.zeros(n, np.int64)
    encoded[rows] = codes + 1
    return encoded, ["", *(str(u) for u in uniques)]


def _encode_multi(values: pd.Series, rows: np.ndarray, n: int) -> tuple[np.ndarray, list[str]]:
    flat = pd.Series(values.to_numpy(), index=rows).explode().dropna()
    pairs = pd.DataFrame({"row": flat.index.to_numpy(), "value": flat.astype(str).to_numpy()})
    pairs = pairs.drop_duplicates()
    codes, uniques = pd.factorize(pairs["value"], sort=True)
    slot = pairs.groupby("row").cumcount().to_numpy()
    encoded = np.zeros((n, int(slot.max(initial=0)) + 1), np.int64)
    encoded[pairs["row"].to_numpy(), slot] = codes + 1
    return encoded, ["", *(str(u) for u in uniques)]
