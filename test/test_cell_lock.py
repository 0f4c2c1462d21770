"""One cell, one runner (issue 32, item 4): the cell lock, and two sweep runners on one spec.

The sweep tests run real `run_local` runners (own processes, started together) whose training and
evaluation children are a stand-in "python": it records each training start in a ledger (with its
runner's pid), sleeps, and writes an adapter and results that depend only on the cell's flags, so
every race of the runners is real while no test waits for torch.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from soo.core.cell_lock import LOCK_FILE, STALE_AFTER_SECONDS, CellLock, read_holder

REPO = Path(__file__).resolve().parents[1]


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped (reuse within the test is improbable)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def write_lock(folder: Path, **values) -> None:
    now = time.time()
    record = {"pid": dead_pid(), "host": socket.gethostname(), "started": now, "heartbeat": now, **values}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK_FILE).write_text(json.dumps(record))


def test_a_lock_is_taken_refused_and_released(tmp_path):
    lines = []
    with CellLock(tmp_path / "cell", "a", lines.append) as first:
        assert first.acquired and (tmp_path / "cell" / LOCK_FILE).is_file()
        holder = read_holder(tmp_path / "cell" / LOCK_FILE)
        assert (holder.pid, holder.host) == (os.getpid(), socket.gethostname())
        with CellLock(tmp_path / "cell", "a", lines.append) as second:
            assert not second.acquired
        assert (tmp_path / "cell" / LOCK_FILE).is_file()  # the refused runner removed nothing
    assert not (tmp_path / "cell" / LOCK_FILE).exists()
    assert lines == [
        f"cell a is being trained by pid {os.getpid()} on host {socket.gethostname()} since "
        f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(holder.started))}; skipping"
    ]
    with CellLock(tmp_path / "cell", "a", lines.append) as third:
        assert third.acquired


def test_a_lock_is_released_on_an_exception(tmp_path):
    with pytest.raises(RuntimeError, match="training failed"):
        with CellLock(tmp_path, "a") as lock:
            assert lock.acquired
            raise RuntimeError("training failed")
    assert not (tmp_path / LOCK_FILE).exists()


def test_the_lock_of_a_dead_pid_on_this_host_is_recovered(tmp_path):
    write_lock(tmp_path)  # written a moment ago: only the pid says it is stale
    lines = []
    with CellLock(tmp_path, "a", lines.append) as lock:
        assert lock.acquired and read_holder(tmp_path / LOCK_FILE).pid == os.getpid()
    assert len(lines) == 1 and "recovered the stale lock" in lines[0] and "no longer exists" in lines[0]


def test_another_hosts_lock_is_respected_until_its_heartbeat_is_older_than_the_bound(tmp_path):
    now = time.time()
    write_lock(tmp_path, host="node-elsewhere", pid=1, started=now - 3600, heartbeat=now - STALE_AFTER_SECONDS + 60)
    with CellLock(tmp_path, "a", lambda *_: None) as lock:
        assert not lock.acquired  # started an hour ago, but its heartbeat is recent
    write_lock(tmp_path, host="node-elsewhere", pid=1, started=now - 3600, heartbeat=now - STALE_AFTER_SECONDS - 60)
    lines = []
    with CellLock(tmp_path, "a", lines.append) as lock:
        assert lock.acquired
    assert "no heartbeat for" in lines[0]


def test_an_unreadable_lock_is_judged_by_its_age(tmp_path):
    # O_EXCL makes the file before its holder writes it: a runner killed in between leaves it empty.
    (tmp_path / LOCK_FILE).write_text("")
    old = time.time() - STALE_AFTER_SECONDS - 60
    os.utime(tmp_path / LOCK_FILE, (old, old))
    lines = []
    with CellLock(tmp_path, "a", lines.append) as lock:
        assert lock.acquired
    assert "recovered the stale lock of a runner whose lock file is unreadable" in lines[0]


def test_a_held_lock_keeps_its_heartbeat_fresh(tmp_path):
    with CellLock(tmp_path, "a", heartbeat_seconds=0.05) as lock:
        first = read_holder(tmp_path / LOCK_FILE)
        deadline = time.time() + 10
        while read_holder(tmp_path / LOCK_FILE).heartbeat == first.heartbeat and time.time() < deadline:
            time.sleep(0.02)
        later = read_holder(tmp_path / LOCK_FILE)
        assert lock.acquired and later.heartbeat > first.heartbeat and later.started == first.started


def test_a_requeued_slurm_job_recovers_its_own_earlier_lock(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    write_lock(tmp_path, host="node-down", pid=1, slurm_job="77", slurm_restart=0)  # fresh heartbeat
    with CellLock(tmp_path, "a", lambda *_: None) as lock:
        assert lock.acquired
    write_lock(tmp_path, host="node-down", pid=1, slurm_job="78", slurm_restart=0)  # another job's: respected
    with CellLock(tmp_path, "a", lambda *_: None) as lock:
        assert not lock.acquired


def test_a_waiting_runner_takes_the_lock_when_it_is_released(tmp_path):
    holder = CellLock(tmp_path, "a")
    assert holder.acquire()
    threading.Timer(0.3, holder.release).start()
    lines = []
    with CellLock(tmp_path, "a", lines.append, wait=True, poll_seconds=0.05) as waiter:
        assert waiter.acquired
    assert len(lines) == 1 and lines[0].endswith("; waiting")


# --------------------------------------------------------------------------------------------
# Sweep runners


STANDIN = """#!{python}
import hashlib, os, pathlib, sys, time
script, args = pathlib.Path(sys.argv[1]).name, sys.argv[2:]
out = pathlib.Path(args[args.index("--output_dir") + 1])
out.mkdir(parents=True, exist_ok=True)
if script == "finetuning.py":
    with open({ledger!r}, "a") as ledger:
        ledger.write(f"{{out.parent.name}} {{os.getppid()}}\\n")
    time.sleep(float(os.environ.get("STANDIN_TRAIN_SECONDS", "0.3")))
    flags = " ".join(args[args.index("--output_dir") + 2 :])  # the cell's settings, not its folder
    (out / "adapter_model.safetensors").write_text(hashlib.sha256(flags.encode()).hexdigest())
else:
    adapter = pathlib.Path(args[args.index("--adapters") + 1]) / "adapter_model.safetensors"
    (out / "results.json").write_text(hashlib.sha256(adapter.read_bytes()).hexdigest())
"""

RUNNER = """
import json, os, pathlib, sys, time
from soo.sweep import load_sweep
from soo.sweep.run import run_local, run_summary
spec = load_sweep(sys.argv[1])
go = pathlib.Path(sys.argv[3])
go.with_name(f"ready-{os.getpid()}").touch()
while not go.exists():
    time.sleep(0.002)
states = run_local(spec, jobs=int(sys.argv[4]), python=sys.argv[2])
print(run_summary(spec, states))
print(json.dumps(states))
"""


def standin_sweep(tmp_path: Path, name: str, seeds: list[int]):
    from soo.sweep import load_sweep

    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"max_steps": 1, "soo_layers": [1]}))
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "base_config": str(base),
                "output_dir": str(tmp_path / name),
                "grid": {"seed": seeds},
                "evaluate": {"n": 1},
            }
        )
    )
    python = tmp_path / "standin-python"
    if not python.exists():
        python.write_text(STANDIN.format(python=sys.executable, ledger=str(tmp_path / "ledger")))
        python.chmod(0o755)
    return load_sweep(spec), python


def ledger(tmp_path: Path) -> list[tuple[str, int]]:
    text = (tmp_path / "ledger").read_text() if (tmp_path / "ledger").exists() else ""
    return [(cell, int(pid)) for cell, pid in (line.split() for line in text.splitlines())]


def start_runner(spec, python: Path, go: Path, jobs: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(spec.path), str(python), str(go), str(jobs)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, so a test can kill it with its children
    )


@pytest.mark.slow
def test_two_runners_on_one_sweep_train_every_cell_once_with_a_single_runners_results(tmp_path):
    from soo.sweep.run import SKIPPED, run_local

    spec, python = standin_sweep(tmp_path, "shared", [0, 1, 2, 3])
    go = tmp_path / "go"
    runners = [start_runner(spec, python, go, jobs) for jobs in (1, 2)]
    deadline = time.time() + 30
    while not all((tmp_path / f"ready-{runner.pid}").exists() for runner in runners) and time.time() < deadline:
        time.sleep(0.01)
    go.touch()  # both have read the spec and wait: they start together
    outputs = [runner.communicate(timeout=60)[0] for runner in runners]
    assert [runner.returncode for runner in runners] == [0, 0], outputs

    starts = ledger(tmp_path)
    names = [cell.name for cell in spec.cells()]
    assert sorted(cell for cell, _ in starts) == sorted(names), starts  # every cell trained exactly once
    for runner, output in zip(runners, outputs):
        states = json.loads(output.splitlines()[-1])
        mine = {cell for cell, pid in starts if pid == runner.pid}
        # "done" for the cells it trained, and for those done before it listed them (none when both start together)
        done_before = int(output.split(" done already")[0].split()[-1])
        assert {name for name, state in states.items() if state == "done"} >= mine, output
        assert sum(state == "done" for state in states.values()) == len(mine) + done_before, output
        skipped = sorted(set(names) - mine)
        assert {name for name, state in states.items() if state == SKIPPED} == set(skipped), output
        # its summary names the others' cells as skipped, not as its own
        summary = output.splitlines()[
            -2
        ]  # e.g. "2/4 cells done; skipped (another runner's): seed-2 (running now), seed-3"
        listed = summary.partition("skipped (another runner's): ")[2].split(", ") if skipped else []
        assert [name.split(" (")[0] for name in listed] == skipped and "not done" not in summary, summary
        # each skip line names a cell the other runner trained, and that runner
        other = next(other.pid for other in runners if other is not runner)
        for line in output.splitlines():
            if " is being trained by pid " in line:
                name = line.split()[1]
                assert name in skipped and f"pid {other} on host" in line, line
    for cell in spec.cells():
        folder = spec.cell_dir(cell)
        done = json.loads((folder / "done.json").read_text())
        assert (cell.name, done["pid"]) in starts  # done.json names the runner that trained the cell
        assert (folder / "cell.log").read_text().count(" train: ") == 1
        assert not (folder / LOCK_FILE).exists()

    single, _ = standin_sweep(tmp_path, "single", [0, 1, 2, 3])
    assert set(run_local(single, python=str(python), log=lambda *_: None).values()) == {"done"}
    for cell in spec.cells():
        for result in ("train/adapter_model.safetensors", "eval/results.json"):
            assert (spec.cell_dir(cell) / result).read_bytes() == (single.cell_dir(cell) / result).read_bytes()


def test_a_killed_runners_cell_is_recovered_and_trained_by_the_next_runner(tmp_path, monkeypatch):
    from soo.sweep.run import run_local

    spec, python = standin_sweep(tmp_path, "killed", [0])
    (cell,) = spec.cells()
    go = tmp_path / "go"
    go.touch()
    monkeypatch.setenv("STANDIN_TRAIN_SECONDS", "60")  # the first runner's training never ends by itself
    runner = start_runner(spec, python, go, 1)
    deadline = time.time() + 30
    while not ledger(tmp_path) and time.time() < deadline:
        time.sleep(0.05)
    assert ledger(tmp_path) == [(cell.name, runner.pid)], "the first runner never started training"
    os.killpg(runner.pid, signal.SIGKILL)  # runner and its training child, as a crash would
    runner.wait()
    assert read_holder(spec.cell_dir(cell) / LOCK_FILE).pid == runner.pid  # the dead runner's lock is left

    monkeypatch.setenv("STANDIN_TRAIN_SECONDS", "0")
    lines = []
    assert run_local(spec, python=str(python), log=lines.append) == {cell.name: "done"}
    assert any(f"recovered the stale lock of pid {runner.pid}" in line for line in lines), lines
    assert ledger(tmp_path) == [(cell.name, runner.pid), (cell.name, os.getpid())]
    assert json.loads((spec.cell_dir(cell) / "done.json").read_text())["pid"] == os.getpid()
    assert not (spec.cell_dir(cell) / LOCK_FILE).exists()


# --------------------------------------------------------------------------------------------
# The deception experiment's cells and the RL stages


def test_the_deception_experiment_skips_a_held_cell_and_lists_it(tmp_path, monkeypatch):
    from soo.organism import experiment
    from soo.organism.config import ExperimentConfig

    trained = []
    monkeypatch.setattr(experiment, "_organism_record", lambda config: {"config": {}})
    monkeypatch.setattr(
        experiment, "_train_finetuning_cell", lambda config, organism, condition, seed, cell: trained.append(condition)
    )
    monkeypatch.setattr(experiment, "evaluate_cell", lambda config, organism, adapter, progress=False: {})
    config = ExperimentConfig(organism_dir=str(tmp_path), seeds=[0], conditions=["soo", "lm_only"])
    lines = []
    with CellLock(config.root / "soo" / "seed0", "soo/seed0") as held:  # another runner trains soo/seed0
        assert held.acquired
        outcome = experiment.run_experiment(config, progress=False, log=lines.append)
    assert trained == ["lm_only"] and outcome["skipped"] == ["soo/seed0"] and outcome["failed"] == []
    assert any(line.startswith("cell soo/seed0 is being trained by pid") for line in lines), lines
    experiment.run_experiment(config, progress=False, log=lines.append)  # the lock is free now
    assert trained == ["lm_only", "soo"]


def test_an_rl_stage_another_runner_trains_is_waited_for_and_reused(tmp_path, monkeypatch, capsys):
    from soo.core import cell_lock
    from soo.rl import stages
    from soo.rl.env import N_ACTIONS, DeceptionEnvConfig
    from soo.rl.maddpg import MADDPG, MADDPGConfig
    from soo.rl.training import observation_dims

    monkeypatch.setattr(cell_lock, "WAIT_POLL_SECONDS", 0.05)
    agent = MADDPG(observation_dims(DeceptionEnvConfig()), N_ACTIONS, MADDPGConfig())
    folder = tmp_path / "honest"
    other = CellLock(folder, "honest")
    assert other.acquire()

    def other_runner_finishes():
        agent.save(folder / "checkpoint", {"settings": {"episodes": 3}})
        other.release()

    threading.Timer(0.3, other_runner_finishes).start()
    trained = []
    stages._stage(folder, lambda: trained.append(1) or (agent, []), {"episodes": 3})
    assert trained == []  # it waited, then reused the other runner's checkpoint
    out = capsys.readouterr().out
    assert f"cell {folder} is being trained by pid {os.getpid()}" in out and "; waiting" in out
    assert "reusing" in out
