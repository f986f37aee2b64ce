"""Training entry point: ``train(cfg)`` and the ``rectorch-train`` command."""

from rectorch.resolvers import register_resolvers

register_resolvers()
