"""What a user sees while training: progress, the metrics table and real warnings; no duplicated or advert lines."""

import logging
import warnings


class _DropTips(logging.Filter):
    """Lightning's logging-service advert (``💡 Tip: ... litlogger``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def quiet_console() -> None:
    """Route Lightning's messages through the one handler Hydra configured, at warning level.

    Lightning attaches its own stream handler to ``lightning.pytorch``; under Hydra, whose root handler
    also prints, every line appeared twice. Its info lines (``GPU available: False``, ...) say nothing a
    CPU user needs.
    """
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
        logger.setLevel(logging.WARNING)
        logger.addFilter(_DropTips())
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropTips())
    # lightning 2.6 against torch 2.13's pytree: a deprecation only Lightning can act on
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
