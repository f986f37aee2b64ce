"""Crash safety: a run killed with SIGKILL resumes to the uninterrupted run's exact metrics; a cache write
killed midway leaves nothing a later run reads as valid."""

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from rectorch.data.cache import load_prepared, save_prepared
from rectorch.data.prepare import Preprocessing, load_or_prepare
from rectorch.data.synthetic import SyntheticSource
from rectorch.training.resume import STATE_KEY, capture_rng, restore_rng

# SASRec with BCE: the shuffle order, dropout masks and sampled negatives all draw from the global generators
RUN = [
    "logger=none",
    "callbacks.progress_bar=null",
    "model/loss=bce",
    "model.view.max_len=30",
    "data.source.num_users=700",
    "data.source.num_items=200",
    "data.batch_size=16",
    "trainer.max_epochs=5",
    "seed=3",
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def train_command(log_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "rectorch.training.cli",
        f"paths.log_dir={log_dir}",
        f"hydra.run.dir={run_dir}",
        *RUN,
        *extra,
    ]


def saved_epoch(path: Path) -> int | None:
    """The 0-based epoch of a complete checkpoint at ``path``, None while there is none."""
    if not path.is_file():
        return None
    return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])


def kill_after_epoch(process: subprocess.Popen, last: Path, epoch: int, timeout: float = 600) -> int:
    """SIGKILL ``process`` as soon as ``last`` holds ``epoch`` or later; returns the epoch it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        held = saved_epoch(last)
        if held is not None and held >= epoch:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=60)
            return held
        time.sleep(0.02)
    process.kill()
    raise AssertionError(f"no {last} of epoch {epoch} while the run was alive (exit code {process.poll()})")


def test_resume_after_kill_matches_the_uninterrupted_run(tmp_path: Path) -> None:
    log_dir = tmp_path / "logs"
    full_dir, killed_dir = tmp_path / "full", tmp_path / "killed"
    with (tmp_path / "full.log").open("w") as log:
        full = subprocess.Popen(train_command(log_dir, full_dir), stdout=log, stderr=subprocess.STDOUT, env=ENV)
        killed = subprocess.Popen(train_command(log_dir, killed_dir), stdout=log, stderr=subprocess.STDOUT, env=ENV)
        held = kill_after_epoch(killed, killed_dir / "checkpoints" / "last.ckpt", epoch=1)
        assert full.wait(timeout=600) == 0, (tmp_path / "full.log").read_text()[-3000:]
    assert killed.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert held < 4 and not (killed_dir / "metrics.json").exists()

    last = killed_dir / "checkpoints" / "last.ckpt"
    resumed = subprocess.run(
        train_command(log_dir, killed_dir, f"ckpt_path={last}"), capture_output=True, text=True, env=ENV, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    expected = json.loads((full_dir / "metrics.json").read_text())
    got = json.loads((killed_dir / "metrics.json").read_text())
    assert got["best_epoch"] == expected["best_epoch"] and got["epochs"] == expected["epochs"] == 5
    for stage in ("val", "test"):
        assert set(got[stage]) == set(expected[stage])
        for name, value in expected[stage].items():
            assert got[stage][name] == pytest.approx(value, abs=1e-6), (stage, name)


def test_without_the_random_states_the_resumed_run_would_differ() -> None:
    """The states matter: a draw after restoring equals the draw after capturing, and differs without it."""
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    state = capture_rng()
    after = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)])
    torch.manual_seed(0)  # what a resumed run had before: the seed of its start, not the checkpoint's state
    np.random.seed(0)
    random.seed(0)
    _ = torch.rand(100), np.random.rand(100), [random.random() for _ in range(100)]
    restore_rng(state)
    again = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)])
    assert torch.equal(after[0], again[0]) and np.array_equal(after[1], again[1]) and after[2] == again[2]
    assert not torch.equal(torch.rand(4), after[0])


def test_random_states_survive_a_weights_only_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "state.ckpt"
    np.random.standard_normal()  # leaves a cached Gaussian in numpy's legacy state
    torch.save({STATE_KEY: capture_rng(), "state_dict": {}}, path)
    expected = (torch.randn(3), np.random.standard_normal(3), random.getrandbits(64))
    restore_rng(torch.load(path, weights_only=True)[STATE_KEY])
    assert torch.equal(torch.randn(3), expected[0])
    assert np.array_equal(np.random.standard_normal(3), expected[1])
    assert random.getrandbits(64) == expected[2]


SOURCE = SyntheticSource(num_users=400, num_items=150)

# a writer that dies with SIGKILL after 20 kB of the cache file, as a kill -9 mid-write would leave it
KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import numpy as np
    from rectorch.data import cache
    from rectorch.data.prepare import Preprocessing, load_or_prepare
    from rectorch.data.synthetic import SyntheticSource

    class DiesMidway:
        def __init__(self, f):
            self.f, self.written = f, 0
        def write(self, data):
            self.written += len(data)
            if self.written > 20_000:
                self.f.write(bytes(data)[:1000]); self.f.flush(); os.kill(os.getpid(), signal.SIGKILL)
            return self.f.write(data)
        def __getattr__(self, name):
            return getattr(self.f, name)

    savez = np.savez
    cache.np.savez = lambda f, **arrays: savez(DiesMidway(f), **arrays)
    load_or_prepare(SyntheticSource(num_users=400, num_items=150), Preprocessing(), sys.argv[1])
    """
)


def entries(cache_dir: Path) -> list[str]:
    return sorted(p.name for p in cache_dir.iterdir())


def test_a_cache_write_killed_midway_leaves_no_valid_entry(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(cache_dir)], env=ENV, timeout=300)
    assert done.returncode == -signal.SIGKILL
    left = entries(cache_dir)  # the half-written temporary file and the dead writer's lock file, no entry
    assert len(left) == 2 and {name.rpartition(".")[2] for name in left} == {"lock", "tmp"}, left

    fresh = load_or_prepare(SOURCE, Preprocessing(), None)
    rebuilt = load_or_prepare(SOURCE, Preprocessing(), cache_dir)
    assert entries(cache_dir) == [f"{fresh.fingerprint}.npz"]  # the dead writer's files are gone
    cached = load_prepared(cache_dir / f"{fresh.fingerprint}.npz", fresh.fingerprint)
    for dataset in (rebuilt, cached):
        assert np.array_equal(dataset.items, fresh.items) and np.array_equal(dataset.indptr, fresh.indptr)


@pytest.mark.parametrize("damage", ["truncated", "flipped byte"])
def test_a_damaged_cache_entry_is_ignored_and_rebuilt(tmp_path: Path, damage: str) -> None:
    fresh = load_or_prepare(SOURCE, Preprocessing(), None)
    path = tmp_path / f"{fresh.fingerprint}.npz"
    save_prepared(fresh, path)
    data = bytearray(path.read_bytes())
    if damage == "truncated":  # what a writer without the temporary file would leave
        data = data[: len(data) // 2]
    else:  # a bad sector inside the items array: the zip directory still reads
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo("items.npy")
        data[info.header_offset + 200] ^= 0xFF
    path.write_bytes(bytes(data))

    assert load_prepared(path, fresh.fingerprint) is None
    rebuilt = load_or_prepare(SOURCE, Preprocessing(), tmp_path)
    assert np.array_equal(rebuilt.items, fresh.items)
    cached = load_prepared(path, fresh.fingerprint)
    assert cached is not None and np.array_equal(cached.items, fresh.items)
