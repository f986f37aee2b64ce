"""Run README bash blocks on demand, each once, in its own directory, after the block it builds on."""

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import data_dir, require_data
from tests.readme.document import Block
from tests.readme.run_blocks import BlockFailed, bash_script, block_env, run_bash

BLOCK_TIMEOUT = 600


@dataclass
class Ran:
    """A README block that ran: its working directory (= RECTORCH_HOME), its log folder and its output."""

    workdir: Path
    logs: Path
    output: str

    def runs(self, under: str = "logs/runs") -> list[dict]:
        """The ``run.json`` of every saved run under ``workdir/under`` (recursively), in path (= time) order."""
        return [json.loads(p.read_text()) for p in sorted((self.workdir / under).rglob("run.json"))]


@dataclass(frozen=True)
class Spec:
    """How to run one README block, found by a substring of its code."""

    key: str
    #: real data files it reads under RECTORCH_DATA_DIR (then the block is `slow` and skipped without them)
    data: tuple[str, ...] = ()
    #: keep MLflow on: a later command reads the store
    keep_logger: bool = False
    #: shell run first in the same directory: what the block presumes exists (not part of the README)
    setup: str = ""
    #: run in the directory of this other block, after it
    after: str | None = None
    substitutions: dict[str, str] = field(default_factory=dict)
    check: Callable[[Ran], None] | None = None


def plant_interactions(path: Path) -> None:
    """A small interactions table with every column the README's commands name (user_id/item_id, customer/sku, ts)."""
    import pandas as pd

    rows = [(u, (u * 7 + 3 * j) % 30 + 1, 1_700_000_000 + j * 86_400 + u * 60) for u in range(60) for j in range(10)]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "ts"])
    frame["customer"] = [f"c{u:03d}" for u in frame.user_id]
    frame["sku"] = [f"sku-{i:02d}" for i in frame.item_id]
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False, sep="\t" if path.suffix == ".tsv" else ",")


class Runner:
    """Runs the README's bash blocks on demand, each once; remembers what ran, or why it failed."""

    def __init__(self, root: Path, specs: dict[str, Spec], blocks: dict[str, Block]) -> None:
        self.root, self.specs, self.blocks = root, dict(specs), dict(blocks)
        self.done: dict[str, Ran | BlockFailed] = {}

    def add(self, name: str, block: Block) -> None:
        """A block without a spec: it runs as written, on synthetic data, with no setup."""
        self.specs.setdefault(name, Spec(block.code))
        self.blocks.setdefault(name, block)

    def bash(self, name: str) -> Ran:
        """Run block ``name`` (its ``after`` block first) unless it already ran; skip when its data is absent."""
        spec = self.specs[name]
        for relative in spec.data:
            require_data(relative)
        if name not in self.done:
            try:
                self.done[name] = self._run(name, spec)
            except (BlockFailed, AssertionError, OSError) as error:
                self.done[name] = (
                    error if isinstance(error, BlockFailed) else BlockFailed(f"README block {name}: {error}")
                )
        result = self.done[name]
        if isinstance(result, BlockFailed):
            raise result
        return result

    def _run(self, name: str, spec: Spec) -> Ran:
        assert name in self.blocks, f"no bash block in README.md contains {spec.key!r} (tests/test_readme.py BLOCKS)"
        workdir = self.bash(spec.after).workdir if spec.after else self._mkdir(name, "work")
        logs = self._mkdir(name, "logs")
        values = {"/abs/": f"{workdir}/abs/", **spec.substitutions}  # the README's example absolute paths
        if (root := data_dir()) is not None:
            values["/abs/path/to/data"] = str(root)
        script = bash_script(self.blocks[name].code, values, spec.setup)
        for planted in set(re.findall(rf"{re.escape(str(workdir))}/abs/\S+?\.(?:csv|tsv|parquet)\b", script)):
            plant_interactions(Path(planted))
        env = block_env(workdir, logs, RT_KEEP_LOGGER="1" if spec.keep_logger else "0")
        ran = Ran(workdir, logs, run_bash(name, script, workdir, env, BLOCK_TIMEOUT))
        if spec.check:
            spec.check(ran)
        return ran

    def _mkdir(self, name: str, kind: str) -> Path:
        path = self.root / re.sub(r"\W+", "-", name).strip("-") / kind
        path.mkdir(parents=True, exist_ok=True)
        return path
