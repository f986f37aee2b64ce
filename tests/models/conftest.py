"""Model tests reuse the composed-config fixture of the training tests."""

from tests.training.conftest import compose_train

__all__ = ["compose_train"]
