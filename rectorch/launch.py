"""What the launcher that started this process (srun, torchrun) set in its environment.

Stdlib only: the config resolvers read it before Hydra builds the run directory. The detection follows
Lightning's own order (``SLURMEnvironment`` before ``TorchElasticEnvironment``), so the layout read here
is the one Lightning validates ``trainer.devices × trainer.num_nodes`` against.
"""

import os
from datetime import datetime

#: SLURM job names that ask Lightning not to treat the job as SLURM-launched (``srun --job-name=interactive``)
_INTERACTIVE = ("bash", "interactive")
#: the rendezvous id torchrun gives every launch without ``--standalone`` or ``--rdzv-id``
_SHARED_RUN_ID = "none"


def _slurm() -> bool:
    return "SLURM_NTASKS" in os.environ and os.environ.get("SLURM_JOB_NAME") not in _INTERACTIVE


def _torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ  # torch.distributed.is_torchelastic_launched()


def launched_layout() -> tuple[int, int] | None:
    """``(processes per node, nodes)`` that srun or torchrun started, or ``None`` outside a launcher."""
    env = os.environ
    if _slurm():
        nodes = int(env.get("SLURM_NNODES", "1"))
        return int(env.get("SLURM_NTASKS_PER_NODE") or int(env["SLURM_NTASKS"]) // nodes), nodes
    if _torchrun():
        per_node = int(env["LOCAL_WORLD_SIZE"])
        return per_node, int(env["WORLD_SIZE"]) // per_node
    return None


def global_rank() -> int:
    """This process's rank among all launched ones (0 outside a launcher), from the variables Lightning reads."""
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID"):
        if key in os.environ:
            return int(os.environ[key])
    return 0


def unshared_run_id() -> str | None:
    """Why this launch has no run id of its own (torchrun's default ``none``), or ``None`` when it has one."""
    if _torchrun() and not _slurm() and os.environ["TORCHELASTIC_RUN_ID"] == _SHARED_RUN_ID:
        return (
            "torchrun without --standalone or --rdzv-id gives every launch the run id 'none': pass --standalone "
            "(one node), --rdzv-id <unique id> (several nodes), or hydra.run.dir=<one directory for all ranks>"
        )
    return None


def run_name(pattern: str) -> str:
    """A run directory name that every process of one launch computes alike.

    Processes start moments apart, so a timestamp would give each its own directory. Under torchrun the
    name is ``torchrun-<rendezvous id>``, under a multi-task srun step ``slurm-<job id>.<step id>``;
    otherwise the local time formatted by ``pattern``.
    """
    env = os.environ
    if _slurm() and int(env["SLURM_NTASKS"]) > 1:
        return f"slurm-{env.get('SLURM_JOB_ID', 'job')}.{env.get('SLURM_STEP_ID', '0')}"
    if _torchrun():
        problem = unshared_run_id()
        if problem:
            raise ValueError(problem)
        return f"torchrun-{env['TORCHELASTIC_RUN_ID']}"
    return datetime.now().strftime(pattern)


def rank_zero(value: object) -> object:
    """``value`` on rank 0, ``None`` on the others: what only one process may write (``hydra.output_subdir``)."""
    return value if global_rank() == 0 else None
