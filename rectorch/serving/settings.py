"""Typed serving settings: the re-ranking defaults and the HTTP service (``conf/serve.yaml`` mirrors them)."""

from dataclasses import dataclass, field


@dataclass
class RecommendSettings:
    """Stage knobs of :class:`~rectorch.serving.recommender.Recommender`.

    Args:
        candidates: rows retrieved from the index per request (stage 1).
        popular_candidates: most popular rows merged into the candidates (0 = no popularity channel).
        exclude_seen: drop the request's history from the results (stage 2).
        mmr_lambda: MMR trade-off, 1.0 = pure relevance, lower = more diverse (stage 3).
        diversity: ``vectors`` (cosine of item vectors) or ``categories`` (same category = similar).
        freshness_weight: relevance bonus for a brand-new item, halving every ``freshness_half_life_days``.
        freshness_half_life_days: age at which the freshness bonus halves.
        explore_share: share of the ``k`` slots given to new or under-exposed items (rounded down).
        explore_quantile: items at or below this popularity quantile count as under-exposed.
        new_item_days: items created within this many days before ``now`` count as new.
        max_k: largest ``k`` a request may ask for.
        max_history: longest history a request may send.
        seed: seed of the exploration sampler.
    """

    candidates: int = 200
    popular_candidates: int = 0
    exclude_seen: bool = True
    mmr_lambda: float = 1.0
    diversity: str = "vectors"
    freshness_weight: float = 0.0
    freshness_half_life_days: float = 30.0
    explore_share: float = 0.0
    explore_quantile: float = 0.2
    new_item_days: float = 30.0
    max_k: int = 1000
    max_history: int = 10000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.candidates <= 0 or self.popular_candidates < 0:
            raise ValueError("candidates must be positive and popular_candidates non-negative")
        if not 0.0 <= self.mmr_lambda <= 1.0:
            raise ValueError(f"mmr_lambda must lie in [0, 1], got {self.mmr_lambda}")
        if not 0.0 <= self.explore_share < 1.0:
            raise ValueError(f"explore_share must lie in [0, 1), got {self.explore_share}")
        if self.diversity not in ("vectors", "categories"):
            raise ValueError(f"diversity must be 'vectors' or 'categories', got {self.diversity!r}")
        if self.max_k <= 0 or self.max_history <= 0:
            raise ValueError("max_k and max_history must be positive")


@dataclass
class ServeSettings:
    """``rectorch-serve`` settings.

    Args:
        bundle: bundle directory.
        host: interface to bind (loopback by default).
        port: TCP port.
        precision: encoder to serve (``fp32``/``int8``); ``null`` = the manifest's choice.
        threads: onnxruntime and FAISS threads per process.
        log_level: uvicorn log level.
        recommend: re-ranking defaults.
    """

    bundle: str = "???"
    host: str = "127.0.0.1"
    port: int = 8000
    precision: str | None = None
    threads: int = 1
    log_level: str = "warning"
    recommend: RecommendSettings = field(default_factory=RecommendSettings)
