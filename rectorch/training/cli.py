"""``rectorch-train``: the Hydra entry point around ``train(cfg)``."""

import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from rectorch.launch import global_rank, unshared_run_id
from rectorch.resolvers import CONFIG_PATH, monitored_metric, register_resolvers

register_resolvers()

USER_ERRORS = (ValueError, FileNotFoundError, KeyError, InstantiationException, MissingMandatoryValue)
#: what Hydra itself writes into a run directory before ``main`` runs
_HYDRA_OWN = {".hydra", "cli.log"}


def _root_cause(error: BaseException) -> BaseException:
    """The error whose message the user reads, its text on one line.

    That is the outermost error in the ``__cause__`` chain that rectorch code raised (a DataError or a
    ValueError, say, that names the file, key and value), not the pandas or Hydra error it wraps; an error
    that no rectorch code raised falls back to the innermost cause.
    """
    package = Path(__file__).resolve().parents[1]
    chain = [error]
    while chain[-1].__cause__ is not None and chain[-1].__cause__ not in chain:
        chain.append(chain[-1].__cause__)

    def raised_by_rectorch(err: BaseException) -> bool:
        tb = err.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        return tb is not None and Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(package)

    chosen = next((e for e in chain if isinstance(e, ValueError) and raised_by_rectorch(e)), chain[-1])
    text = " ".join(line.strip() for line in str(chosen).splitlines() if line.strip())
    if text == str(chosen):
        return chosen
    return type(type(chosen).__name__, (Exception,), {})(text)  # same name, message on one line


def discard_failed_run(output_dir: Path, before: set[str]) -> None:
    """Remove what a failed run created in ``output_dir``, and nothing else.

    ``before`` lists the entries the directory held when ``main`` started. A directory that held only
    Hydra's own files was made for this run and goes whole; in any other (a folder of the user's, or an
    earlier run) only the entries this run added go. A run that saved a checkpoint or metrics keeps them.
    """
    if not output_dir.is_dir():
        return
    added = [path for path in output_dir.iterdir() if path.name not in before]
    saved = [p for path in added for p in ([path] if path.is_file() else path.rglob("*"))]
    if any(p.suffix == ".ckpt" or p.name == "metrics.json" for p in saved):
        return
    if before <= _HYDRA_OWN:
        shutil.rmtree(output_dir, ignore_errors=True)
        return
    for path in added:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def train_main(cfg: DictConfig) -> float | None:
    from rectorch.training.train import train
    from rectorch.training.two_stage import train_two_stage

    output_dir = Path(HydraConfig.get().runtime.output_dir)
    before = {path.name for path in output_dir.iterdir()} if output_dir.is_dir() else set()
    try:
        results = train_two_stage(cfg) if cfg.get("two_stage") else train(cfg)
    except USER_ERRORS as error:
        if HydraConfig.get().mode.name == "MULTIRUN":
            raise
        if global_rank() == 0:  # the other ranks of a launch share rank 0's run directory
            discard_failed_run(output_dir, before)
        cause = _root_cause(error)
        print(f"rectorch-train: error: {type(cause).__name__}: {cause}", file=sys.stderr)
        sys.exit(2)
    # the value a sweeper maximises: the monitored validation metric under the run's protocol
    return results["val"].get(monitored_metric(cfg.evaluation.sampled_negatives).removeprefix("val/"))


def main() -> None:
    """``rectorch-train [overrides]``; a torchrun launch whose ranks cannot agree on a run directory ends here."""
    problem = unshared_run_id()
    if problem and not any(arg.lstrip("+").startswith("hydra.run.dir=") for arg in sys.argv[1:]):
        print(f"rectorch-train: error: {problem}", file=sys.stderr)
        sys.exit(2)
    train_main()


if __name__ == "__main__":
    main()
