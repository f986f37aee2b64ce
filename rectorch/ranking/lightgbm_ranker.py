"""``LightGBMRanker``: LambdaRank gradient-boosted trees over candidate features (``ranker=lightgbm``).

It fits with ``lightgbm.train`` on query groups, early-stops on the valid groups' NDCG@k only, keeps the
trees up to the best iteration, saves LightGBM's own text model, and exports ONNX through onnxmltools.

Exporting exactly: LightGBM compares ``double(x) <= threshold`` with double thresholds (reading any
``|x| <= 1e-35`` as 0), while the ONNX tree ensemble onnxruntime runs on float inputs holds float
thresholds. Rounding a threshold to the nearest float sends a feature value that equals the rounded
threshold down the wrong branch (seen: score errors of 2.9 on 6 % of rows where a feature takes adjacent
float values). Features are float32, so each threshold can be replaced by the largest float32 that LightGBM
sends left, which decides every float32 input the same way: the export converts a copy of the model patched
that way (:func:`float32_exact`), then checks itself on rows sitting on the split boundaries, with and
without missing cells.
"""

import json
import re
import time
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from rectorch.interprocess import write_atomic
from rectorch.ranking.data import RankingData
from rectorch.ranking.ranker import export_sample, group_ndcg, validate_export
from rectorch.serving.ranker import RankBase

MODEL_FILE, IMPORTANCE_FILE = "ranker.txt", "feature_importance.json"
OBJECTIVES = ("lambdarank", "rank_xendcg")  # the ranking objectives onnxmltools converts
ONNX_OPSET = 15  # the highest default-domain opset onnxmltools 1.16 converts LightGBM models to
# trees per ONNX tree-ensemble node: each node sums its trees in float, the nodes are summed in double
# (onnxmltools' ``split``); measured at 348 trees × 63 leaves: max error 6.8e-6 in one node, 6.5e-7 in
# nodes of 25, at the same latency
TREES_PER_NODE = 25
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_]")
_TREE_START, _TREE_SIZES = re.compile(r"^Tree=", re.M), re.compile(r"^tree_sizes=.*$", re.M)
_MISSING_NONE, _MISSING_ZERO = 0, 1  # LightGBM's decision_type bits 2-3; 2 is NaN
_CATEGORICAL, _DEFAULT_LEFT = 1, 2  # decision_type bits 0 and 1
_ZERO = np.float32(1e-35)  # LightGBM's kZeroThreshold: it predicts on |x| <= _ZERO as on 0


class LightGBMRanker:
    """LambdaRank trees; each argument is the LightGBM parameter of the same name.

    Args:
        num_boost_round: most trees; early stopping keeps those up to the best valid NDCG@``eval_at``.
        early_stopping_rounds: rounds without a better valid NDCG before fitting stops.
        eval_at: the NDCG cut-off early stopping and the fit report read.
        num_threads: LightGBM threads (fit and predict).
        seed: every LightGBM seed (bagging, feature fraction, data); with ``deterministic=True``
            and row-wise histograms, equal inputs give equal trees.
        objective: ``lambdarank`` or ``rank_xendcg``.
        extra_params: further LightGBM parameters (not those named above).
    """

    name = "lightgbm"

    def __init__(
        self,
        num_leaves: int = 63,
        learning_rate: float = 0.05,
        num_boost_round: int = 500,
        early_stopping_rounds: int = 50,
        min_data_in_leaf: int = 50,
        feature_fraction: float = 0.9,
        bagging_fraction: float = 0.8,
        bagging_freq: int = 1,
        lambdarank_truncation_level: int = 20,
        eval_at: int = 10,
        num_threads: int = 1,
        seed: int = 0,
        objective: str = "lambdarank",
        extra_params: dict[str, Any] | None = None,
        base_rank: str | None = None,
        base_weight: float = 1.0,
    ) -> None:
        if objective not in OBJECTIVES:
            raise ValueError(f"ranker.objective must be one of {OBJECTIVES}, got {objective!r}")
        for key, value in (("num_boost_round", num_boost_round), ("early_stopping_rounds", early_stopping_rounds)):
            if int(value) < 1:
                raise ValueError(f"ranker.{key} must be at least 1, got {value}")
        self.params: dict[str, Any] = {
            "objective": objective,
            "metric": "ndcg",
            "eval_at": [int(eval_at)],
            "num_leaves": num_leaves,
            "learning_rate": learning_rate,
            "min_data_in_leaf": min_data_in_leaf,
            "feature_fraction": feature_fraction,
            "bagging_fraction": bagging_fraction,
            "bagging_freq": bagging_freq,
            "lambdarank_truncation_level": lambdarank_truncation_level,
            "num_threads": num_threads,
            "seed": seed,
            "deterministic": True,
            "force_row_wise": True,  # the histogram layout is then never chosen by timing
            "verbosity": -1,
        }
        for key in extra_params or {}:
            if key in self.params or key in ("num_boost_round", "early_stopping_rounds"):
                raise ValueError(f"ranker.extra_params.{key} is set by LightGBMRanker itself; use its own argument")
        self.params.update(extra_params or {})
        self.num_boost_round, self.early_stopping_rounds, self.eval_at = num_boost_round, early_stopping_rounds, eval_at
        self.base_rank, self.base_weight = base_rank, float(base_weight)
        self.base: RankBase | None = None
        self.feature_names: list[str] = []
        self.booster: lgb.Booster | None = None
        self.onnx_report: dict[str, Any] = {}
        self._reference = np.zeros((0, 0), np.float32)  # valid rows the export is checked on

    def fit(self, train: RankingData, valid: RankingData) -> dict[str, Any]:
        """Fit on ``train``, early-stop on ``valid``; the report holds the best iteration, the valid
        NDCG@k curve (LightGBM's, which counts groups without a target as 1), :func:`group_ndcg` on valid
        and the seconds taken."""
        if train.names != valid.names:
            raise ValueError(f"train and valid feature names differ: {train.names} vs {valid.names}")
        started = time.perf_counter()
        names = lightgbm_names(train.names)
        self.base = None
        if self.base_rank is not None:
            if self.base_rank not in train.names:
                raise ValueError(f"ranker.base_rank={self.base_rank!r} is not a feature; features: {train.names}")
            column = train.features[:, train.names.index(self.base_rank)]
            missing = float(np.nanmax(column, initial=0.0)) + 1.0  # a candidate the channel did not retrieve
            self.base = RankBase(self.base_rank, self.base_weight, missing)
        train_set = lgb.Dataset(
            train.features, train.labels, group=train.groups, feature_name=names, init_score=self._base(train)
        )
        valid_set = lgb.Dataset(
            valid.features, valid.labels, group=valid.groups, reference=train_set, init_score=self._base(valid)
        )
        history: dict[str, Any] = {}
        booster = lgb.train(
            self.params,
            train_set,
            num_boost_round=self.num_boost_round,
            valid_sets=[valid_set],
            valid_names=["valid"],
            callbacks=[
                lgb.early_stopping(self.early_stopping_rounds, first_metric_only=True, verbose=False),
                lgb.record_evaluation(history),
            ],
        )
        best = booster.best_iteration
        self.booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
        self.feature_names, self._reference = list(train.names), valid.features[:256].copy()
        curve = [float(value) for value in history["valid"][f"ndcg@{self.eval_at}"]]
        ndcg = group_ndcg(self.predict(valid.features), valid.labels, valid.groups, self.eval_at)
        return {
            "ranker": self.name,
            "best_iteration": best,
            "trees": self.booster.num_trees(),
            f"valid_ndcg@{self.eval_at}": ndcg,
            f"lightgbm_valid_ndcg@{self.eval_at}": {
                "first": curve[0],
                "best": curve[best - 1],
                "last": curve[-1],
                "rounds": len(curve),
            },
            "train_groups": len(train),
            "valid_groups": len(valid),
            "fit_seconds": time.perf_counter() - started,
        }

    def _base(self, data: RankingData) -> np.ndarray | None:
        return None if self.base is None else self.base.scores(data.features, data.names)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Scores ``(N,)`` float64 of feature rows ``(N, F)`` (NaN = missing), read as float32: the trees plus
        the base prior when ``base_rank`` is set."""
        trees = self.tree_scores(features)
        if self.base is None:
            return trees
        return trees + self.base.scores(np.ascontiguousarray(features, np.float32), self.feature_names)

    def tree_scores(self, features: np.ndarray) -> np.ndarray:
        """The trees' part of :meth:`predict` (what the ONNX model computes)."""
        booster = self._fitted()
        features = np.ascontiguousarray(features, np.float32)
        if features.ndim != 2 or features.shape[1] != len(self.feature_names):
            raise ValueError(
                f"LightGBMRanker.predict expects (N, {len(self.feature_names)}) features, got {features.shape}"
            )
        if not len(features):
            return np.zeros(0, np.float64)
        return np.asarray(booster.predict(features, num_threads=self.params["num_threads"]), np.float64)

    def to_onnx(self) -> bytes:
        """ONNX (input ``features`` float32 ``[N, F]``, output ``scores`` float32 ``[N, 1]``), checked against
        :meth:`predict` on the kept valid rows and on split-boundary rows, each also with NaN cells."""
        booster = self._fitted()
        model = convert(lgb.Booster(model_str=float32_exact(booster.model_to_string())), len(self.feature_names))
        rows = np.concatenate([self._reference.reshape(-1, len(self.feature_names)), boundary_rows(booster)])
        return validate_export(self, model, export_sample(rows, rows=len(rows)), self.tree_scores)

    def save(self, directory: str | Path) -> list[Path]:
        """Write ``ranker.txt`` (LightGBM's text model) and ``feature_importance.json`` (total gain per feature)."""
        booster, directory = self._fitted(), Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        gains = booster.feature_importance(importance_type="gain")
        importance = {name: float(gain) for name, gain in zip(self.feature_names, gains, strict=True)}
        written = [directory / MODEL_FILE, directory / IMPORTANCE_FILE]
        write_atomic(written[0], booster.model_to_string().encode())
        write_atomic(written[1], json.dumps(importance, indent=2).encode())
        return written

    @classmethod
    def load_text(
        cls, path: str | Path, feature_names: list[str] | None = None, num_threads: int = 1
    ) -> "LightGBMRanker":
        """A ranker predicting from a LightGBM text model (``ranker.txt``); ``feature_names`` default to the
        model's own (the sanitised ones LightGBM stores).

        Raises:
            ValueError: the file is not a LightGBM model, or ``feature_names`` do not match it.
        """
        try:
            booster = lgb.Booster(model_file=str(path))
        except lgb.basic.LightGBMError as error:
            raise ValueError(f"{path}: not a LightGBM text model ({str(error).strip()})") from None
        stored = booster.feature_name()
        if feature_names is not None and lightgbm_names(list(feature_names)) != stored:
            raise ValueError(f"{path}: the model's features {stored} do not match feature_names {list(feature_names)}")
        ranker = cls(num_threads=num_threads)
        ranker.booster, ranker.feature_names = booster, list(feature_names or stored)
        return ranker

    def _fitted(self) -> lgb.Booster:
        if self.booster is None:
            raise ValueError("LightGBMRanker is not fitted: call fit() or load_text() first")
        return self.booster


def lightgbm_names(names: list[str]) -> list[str]:
    """Feature names LightGBM accepts (characters other than letters, digits and ``_`` become ``_``).

    Raises:
        ValueError: two names become the same.
    """
    safe = [_UNSAFE_NAME.sub("_", name) for name in names]
    if len(set(safe)) != len(safe):
        clashes = sorted({a for a, s in zip(names, safe, strict=True) if safe.count(s) > 1})
        raise ValueError(f"feature names {clashes} coincide once made LightGBM-safe")
    return safe


def float32_exact(model_text: str) -> str:
    """The text model with every numerical threshold replaced by the largest float32 LightGBM sends left and, where
    NaN is read as 0 (missing type None), the default-left bit set, so a float-threshold tree ensemble routes
    every float32 row as LightGBM does (LightGBM itself predicts the same on float32 rows either way).

    Raises:
        ValueError: a split treats zero as missing (``zero_as_missing``), which ONNX trees cannot express.
    """
    lines = model_text.split("\n")
    threshold_line = -1
    for number, line in enumerate(lines):
        if line.startswith("threshold="):
            threshold_line = number
        elif line.startswith("decision_type="):
            thresholds = lines[threshold_line].removeprefix("threshold=").split(" ")
            types = [int(token) for token in line.removeprefix("decision_type=").split(" ")]
            for node, kind in enumerate(types):
                if kind & _CATEGORICAL:
                    continue
                missing = (kind >> 2) & 3
                if missing == _MISSING_ZERO:
                    raise ValueError("a split treats zero as missing (zero_as_missing): ONNX trees cannot export it")
                thresholds[node] = repr(float(float32_threshold(float(thresholds[node]))))
                types[node] = kind | _DEFAULT_LEFT if missing == _MISSING_NONE else kind
            lines[threshold_line] = "threshold=" + " ".join(thresholds)
            lines[number] = "decision_type=" + " ".join(map(str, types))
    return _with_tree_sizes("\n".join(lines))


def _with_tree_sizes(model_text: str) -> str:
    """``tree_sizes=`` recomputed: the byte length of every ``Tree=`` block, which LightGBM's parser relies on."""
    starts = [match.start() for match in _TREE_START.finditer(model_text)]
    ends = [*starts[1:], model_text.index("\nend of trees") + 1]
    sizes = " ".join(str(len(model_text[start:end].encode())) for start, end in zip(starts, ends, strict=True))
    return _TREE_SIZES.sub(f"tree_sizes={sizes}", model_text, count=1)


def float32_threshold(threshold: float) -> np.float32:
    """The largest float32 ``x`` LightGBM sends left at ``threshold`` (``x <= threshold``, with ``|x| <= 1e-35``
    read as 0), so ``x32 <= float32_threshold(t)`` decides every float32 as LightGBM does."""
    with np.errstate(over="ignore"):  # a threshold beyond the float32 range becomes ±inf, which decides alike
        nearest = np.float32(threshold)
    floor = np.nextafter(nearest, np.float32(-np.inf)) if float(nearest) > threshold else nearest
    if threshold >= 0:
        return max(floor, _ZERO)  # 0 goes left, so does all that reads as 0
    return min(floor, np.nextafter(-_ZERO, np.float32(-np.inf)))  # 0 goes right, so does all that reads as 0


def boundary_rows(booster: lgb.Booster, rows: int = 256, seed: int = 0) -> np.ndarray:
    """Rows whose every column sits on one of that column's split boundaries (the float32 at or just above a
    threshold; 0 for columns without splits), drawn at random. ``(rows, F)`` float32."""
    values: list[list[float]] = [[0.0] for _ in range(booster.num_feature())]
    for tree in booster.dump_model()["tree_info"]:
        stack = [tree["tree_structure"]]
        while stack:
            node = stack.pop()
            if "split_feature" not in node:
                continue
            if node["decision_type"] == "<=":
                at = float32_threshold(float(node["threshold"]))
                with np.errstate(over="ignore"):
                    above = np.nextafter(at, np.float32(np.inf))
                values[node["split_feature"]] += [float(v) for v in (at, above) if np.isfinite(v)]
            stack += [node["left_child"], node["right_child"]]
    generator = np.random.default_rng(seed)
    return np.stack([generator.choice(np.asarray(v, np.float32), rows) for v in values], axis=1)


def convert(booster: lgb.Booster, width: int) -> bytes:
    """onnxmltools' ONNX of ``booster`` (trees summed in double across nodes of :data:`TREES_PER_NODE`), its input
    named ``features`` and its output ``scores``."""
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    model = onnxmltools.convert_lightgbm(
        booster,
        initial_types=[("features", FloatTensorType([None, width]))],
        target_opset=ONNX_OPSET,
        split=TREES_PER_NODE if booster.num_trees() > TREES_PER_NODE else None,  # onnxmltools refuses one part
    )
    old = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = ["scores" if name == old else name for name in node.output]
    model.graph.output[0].name = "scores"
    return model.SerializeToString()
