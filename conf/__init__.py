"""rectorch's Hydra configs, shipped inside the wheel as ``rectorch.conf`` (``pkg://rectorch.conf``)."""
