"""Run README code blocks as a user would: bash under ``bash -euo pipefail``, python with the venv's python.

Each runs in its own working directory, which is also ``$RECTORCH_HOME``, with the venv's ``bin`` first on
``PATH`` and one OpenMP thread. ``shell.sh`` is sourced first (it shrinks training and backgrounds servers).
"""

import ast
import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.readme.document import placeholders

SHELL_PREAMBLE = Path(__file__).with_name("shell.sh")
VENV_BIN = Path(sys.executable).parent
_VENV_LINE = re.compile(r"^\s*python3(\.\d+)? -m venv\b.*$", re.M)
_COMMENT = re.compile(r"(^|\s)#.*$", re.M)


class BlockFailed(AssertionError):
    """A README block exited non-zero; the message holds the end of its output."""


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that are free right now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def block_env(workdir: Path, logs: Path, **extra: str) -> dict[str, str]:
    """The environment a block runs in: the venv first on PATH, outputs under ``workdir``, one thread."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MLFLOW_", "RT_"))}
    env |= {
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "RECTORCH_HOME": str(workdir),
        "OMP_NUM_THREADS": "1",
        "OMP_WAIT_POLICY": "PASSIVE",
        "MKL_NUM_THREADS": "1",
        "RT_LOGS": str(logs),
        "RT_FREE_PORTS": " ".join(map(str, free_ports(3))),
        **extra,
    }
    return env


def substitute(code: str, substitutions: dict[str, str]) -> str:
    """Fill in the README's placeholders (longest first, so ``/abs/path/to/data`` wins over ``/abs/``)."""
    for old in sorted(substitutions, key=len, reverse=True):
        code = code.replace(old, substitutions[old])
    left = placeholders(_COMMENT.sub("", code))
    if left:
        raise BlockFailed(f"README placeholders without a value in tests/test_readme.py: {sorted(left)}")
    return code


def bash_script(code: str, substitutions: dict[str, str], setup: str = "") -> str:
    """The script a bash block runs as: the preamble, the setup the README presumes, then the block itself."""
    # `python3.11 -m venv .venv && . .venv/bin/activate`: the test already runs in the project's venv
    code = _VENV_LINE.sub(
        lambda m: "echo " + shlex.quote(f"readme: not re-run (the tests run in the venv): {m[0]}"), code
    )
    return f"source {shlex.quote(str(SHELL_PREAMBLE))}\n{setup}\n{substitute(code, substitutions)}\n"


def _stop_leftover_servers(logs: Path) -> None:
    """Kill the process groups of servers a block started, if the block itself did not get to stop them."""
    pids = logs / "servers.pids"
    for line in pids.read_text().split() if pids.exists() else []:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(int(line), signal.SIGKILL)


def run_bash(name: str, script: str, workdir: Path, env: dict[str, str], timeout: float) -> str:
    """Run ``script`` in ``workdir``; its combined output, or :class:`BlockFailed` with the end of it."""
    logs = Path(env["RT_LOGS"])
    path = logs / "block.sh"
    path.write_text(script)
    try:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", str(path)],
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as error:
        output = error.stdout if isinstance(error.stdout, str) else (error.stdout or b"").decode(errors="replace")
        raise BlockFailed(f"README block {name} ran past {timeout:.0f} s:\n{output[-6000:]}") from None
    finally:
        _stop_leftover_servers(logs)
    (logs / "output.txt").write_text(done.stdout)
    if done.returncode != 0:
        raise BlockFailed(f"README block {name} exited {done.returncode}:\n{done.stdout[-6000:]}")
    return done.stdout


_SHOW = """\
def __readme_show(source, value):
    import dataclasses, json
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if hasattr(value, "columns") and hasattr(value, "to_dict"):  # a pandas DataFrame: its rows
        value = value.to_dict(orient="records")
    if hasattr(value, "tolist"):
        value = value.tolist()
    print("readme>>>", json.dumps({"expr": source, "value": value}, default=str), flush=True)
"""


def echo_expressions(code: str) -> str:
    """``code`` with each top-level expression statement printed as JSON, as a REPL would show it."""
    tree = ast.parse(code)
    for i, node in enumerate(tree.body):
        if isinstance(node, ast.Expr) and not isinstance(node.value, ast.Constant):
            source = ast.get_source_segment(code, node.value)
            call = ast.Call(ast.Name("__readme_show", ast.Load()), [ast.Constant(source), node.value], [])
            tree.body[i] = ast.Expr(call)
    return _SHOW + ast.unparse(ast.fix_missing_locations(tree)) + "\n"


def run_python(name: str, code: str, workdir: Path, env: dict[str, str], timeout: float) -> dict[str, Any]:
    """Run a python block in ``workdir``; the value of each of its expression statements, by source text."""
    logs = Path(env["RT_LOGS"])
    path = logs / "block.py"
    path.write_text(echo_expressions(code))
    try:
        done = subprocess.run(
            [str(VENV_BIN / "python"), str(path)],
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise BlockFailed(f"README python block {name} ran past {timeout:.0f} s") from None
    if done.returncode != 0:
        raise BlockFailed(f"README python block {name} exited {done.returncode}:\n{done.stdout[-6000:]}")
    lines = done.stdout.splitlines()
    shown = [json.loads(line.removeprefix("readme>>> ")) for line in lines if line.startswith("readme>>> ")]
    return {entry["expr"]: entry["value"] for entry in shown}
