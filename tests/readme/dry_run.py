"""Check a README command without running it for hours: compose its Hydra config, or parse its arguments.

A training command is composed with the packaged configs exactly as ``rectorch-train`` would (a misspelled
key or group fails), its interpolations are resolved, and every ``_target_`` in it is imported and must
accept the keys its node gives it (so ``+model.loss.margin=0.1`` on a loss without ``margin`` fails too).
"""

import argparse
import inspect
import itertools
import runpy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf, open_dict

from rectorch.resolvers import config_dir, register_resolvers

PROJECT = Path(__file__).resolve().parents[2]
_HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}
#: scripts/ entry points built on @hydra.main, and the config each composes
SCRIPT_CONFIGS = {"cold_start_report.py": "cold_start"}


def expand_sweeps(overrides: list[str]) -> list[list[str]]:
    """The override lists of a ``--multirun`` (``a=1,2 b=x,y`` → four lists); one list without sweeps."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = []
    for override, text in zip(parsed, overrides, strict=True):
        if override.is_sweep_override():
            key = override.get_key_element()
            choices.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            choices.append([text])
    return [list(combination) for combination in itertools.product(*choices)]


def compose_config(config_name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """``config_name`` composed with ``overrides`` as the Hydra app would, resolved, without the hydra node."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)  # ${hydra:runtime.output_dir}: set by a real run only
    OmegaConf.resolve(cfg)
    return cfg


def _nodes_with_target(node: Any, path: str = "") -> Iterator[tuple[str, dict]]:
    if isinstance(node, dict):
        if "_target_" in node:
            yield path or "<root>", node
        for key, value in node.items():
            yield from _nodes_with_target(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _nodes_with_target(value, f"{path}[{i}]")


def check_targets(cfg: DictConfig) -> list[str]:
    """Import every ``_target_`` and check its node's keys are parameters it takes; the targets checked."""
    checked = []
    for path, node in _nodes_with_target(OmegaConf.to_container(cfg, resolve=True)):
        target = get_object(node["_target_"])  # raises when the module or attribute does not exist
        parameters = inspect.signature(target).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            unknown = set(node) - _HYDRA_KEYS - set(parameters)
            assert not unknown, f"{path}: {node['_target_']} takes no parameter {sorted(unknown)}"
        checked.append(node["_target_"])
    return checked


def check_train(overrides: list[str], output_dir: Path, config_name: str = "train") -> list[DictConfig]:
    """Compose a training command's overrides (each job of a sweep); check data, model and every target."""
    multirun = {"-m", "--multirun"} & set(overrides)
    overrides = [arg for arg in overrides if arg not in multirun]
    unknown = [arg for arg in overrides if arg.startswith("-")]
    assert not unknown, f"the dry run knows no flag {unknown}: extend tests/readme/dry_run.py"
    configs = []
    for job in expand_sweeps(overrides) if multirun else [overrides]:
        cfg = compose_config(config_name, job, output_dir)
        assert "_target_" in cfg.data and "_target_" in cfg.model, "a training config needs a data and a model node"
        check_targets(cfg)
        for key in ("ckpt_path", "init_from"):  # a checkpoint the command names (the tests give a real one)
            assert cfg.get(key) is None or Path(cfg[key]).is_file(), f"{key}={cfg[key]}: no such checkpoint"
        configs.append(cfg)
    return configs


def check_export(overrides: list[str], output_dir: Path) -> DictConfig:
    """Compose an export command's overrides with ``export.yaml``; check its targets and the run it names."""
    cfg = compose_config("export", overrides, output_dir)
    check_targets(cfg)
    assert cfg.run_dir is None or (Path(cfg.run_dir) / "run.json").is_file(), f"{cfg.run_dir} is no saved run"
    return cfg


class _Parsed(Exception):
    """Raised right after an entry point parsed its arguments: what it parsed, and nothing run."""

    def __init__(self, namespace: argparse.Namespace, rest: list[str]) -> None:
        super().__init__("parsed")
        self.namespace, self.rest = namespace, rest


@contextmanager
def stop_after_parsing(monkeypatch: Any) -> Iterator[None]:
    """Make every argparse parser raise :class:`_Parsed` once it accepted its arguments (a bad one still exits 2)."""
    real = argparse.ArgumentParser.parse_known_args

    def parse_known_args(self: argparse.ArgumentParser, args: Any = None, namespace: Any = None) -> Any:
        namespace, rest = real(self, args, namespace)
        raise _Parsed(namespace, rest)

    def parse_args(self: argparse.ArgumentParser, args: Any = None, namespace: Any = None) -> Any:
        namespace, rest = real(self, args, namespace)
        if rest:
            self.error(f"unrecognized arguments: {' '.join(rest)}")
        raise _Parsed(namespace, [])

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_known_args", parse_known_args)
        patch.setattr(argparse.ArgumentParser, "parse_args", parse_args)
        yield


def parse_with(entry: Callable[[], Any], monkeypatch: Any) -> tuple[argparse.Namespace, list[str]]:
    """Call ``entry`` until its argument parser accepted ``sys.argv``; what it parsed (SystemExit: rejected)."""
    with stop_after_parsing(monkeypatch):
        try:
            entry()
        except _Parsed as parsed:
            return parsed.namespace, parsed.rest
    raise AssertionError(f"{entry} never parsed its arguments")


def parse_script(script: Path, argv: list[str], monkeypatch: Any) -> tuple[argparse.Namespace, list[str]]:
    """Run ``script``'s ``main()`` with ``argv`` up to the point its parser accepted them."""
    assert script.is_file(), f"{script} does not exist"
    namespace = runpy.run_path(str(script), run_name="readme_dry_run")
    monkeypatch.setattr("sys.argv", [str(script), *argv])
    return parse_with(namespace["main"], monkeypatch)


def parse_module(module: str, argv: list[str], monkeypatch: Any) -> tuple[argparse.Namespace, list[str]]:
    """``python -m module argv...`` up to the point its parser accepted ``argv``."""
    monkeypatch.setattr("sys.argv", [module, *argv])
    return parse_with(lambda: runpy.run_module(module, run_name="__main__", alter_sys=True), monkeypatch)


def check_script(argv: list[str], output_dir: Path, monkeypatch: Any) -> None:
    """``python scripts/X.py ...``: Hydra scripts are composed; argparse scripts parse their arguments and the
    Hydra overrides they pass on (bench_sequential) are composed with the training config."""
    assert argv[0] == "python", argv
    script = PROJECT / argv[1]
    if script.name in SCRIPT_CONFIGS:
        check_train(argv[2:], output_dir, SCRIPT_CONFIGS[script.name])
        return
    _, rest = parse_script(script, argv[2:], monkeypatch)
    if rest:
        check_train(rest, output_dir)
