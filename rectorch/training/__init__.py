"""Training entry point: ``train(cfg)`` and the ``rectorch-train`` command."""

from rectorch.training.resolvers import register_resolvers

register_resolvers()
