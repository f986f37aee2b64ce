"""Torch-free serving: a verified bundle → multi-stage recommendations (numpy, onnxruntime, faiss only).

Importing this package never loads torch, lightning or hydra (a test checks it in a subprocess).
"""

from rectorch.serving.catalog import Catalog
from rectorch.serving.manifest import BundleError, InputSpec, Manifest, read_manifest
from rectorch.serving.recommender import Recommendation, Recommender
from rectorch.serving.settings import RecommendSettings, ServeSettings

__all__ = [
    "BundleError",
    "Catalog",
    "InputSpec",
    "Manifest",
    "RecommendSettings",
    "Recommendation",
    "Recommender",
    "ServeSettings",
    "read_manifest",
]
