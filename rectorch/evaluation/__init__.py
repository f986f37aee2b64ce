"""Ranking evaluation: metrics, the protocol record and the chunked full-ranking evaluator."""

from rectorch.evaluation.evaluator import RankingEvaluator
from rectorch.evaluation.protocol import Protocol
from rectorch.evaluation.settings import EvaluationSettings

__all__ = ["EvaluationSettings", "Protocol", "RankingEvaluator"]
