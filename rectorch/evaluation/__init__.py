"""Ranking evaluation: metrics, the protocol record, the chunked full-ranking and candidate evaluators."""

from rectorch.evaluation.candidates import CandidateEvaluator
from rectorch.evaluation.evaluator import RankingEvaluator
from rectorch.evaluation.protocol import Protocol
from rectorch.evaluation.settings import EvaluationSettings

__all__ = ["CandidateEvaluator", "EvaluationSettings", "Protocol", "RankingEvaluator"]
