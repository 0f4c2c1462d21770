"""One cell, one runner: a lock file in each cell's folder that every runner takes before it
checks whether the cell is done and trains it.

The lock is `cell.lock`, created with O_CREAT | O_EXCL (atomic on local filesystems and on NFSv3+),
holding JSON: pid, host, start time, the last heartbeat and, under Slurm, the job id and restart
count. While the lock is held a thread rewrites it (atomically, soo.core.io) every
HEARTBEAT_SECONDS with a new heartbeat time. A runner that finds a lock:
  * leaves the cell alone while the holder may be alive (`skip_line` says who holds it, since when);
  * recovers it when its holder is provably gone:
      - same host and the pid no longer exists (os.kill(pid, 0)), or
      - the same Slurm job at a higher restart count (Slurm runs one incarnation of a job at a
        time: a requeued job finds its own earlier lock), or
      - another host (no pid to check) and no heartbeat for STALE_AFTER_SECONDS.
Breaking a stale lock happens under a short second lock (`cell.lock.breaking`), and the lock is
judged again under it, so two runners that both found the same stale lock cannot each delete
the lock the other just made.

Limits: a pid reused by an unrelated process on the same host keeps a dead holder's lock until
that process ends (delete cell.lock by hand); hosts' clocks must agree to well within
STALE_AFTER_SECONDS (NTP keeps them within a second).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from soo.core.io import write_json_atomic

LOCK_FILE = "cell.lock"
BREAKING_SUFFIX = ".breaking"
# A holder rewrites its heartbeat every minute; ten missed heartbeats cannot be a live runner
# (a save or a slow shared filesystem stalls a write for seconds, not ten minutes), while a
# crashed node's cells are free again after 10 minutes instead of after the longest cell's duration.
HEARTBEAT_SECONDS = 60.0
STALE_AFTER_SECONDS = 600.0
# The guard that serialises breaking a stale lock is held for a read and an unlink; one older
# than this belongs to a breaker that died in between.
BREAKING_STALE_SECONDS = 30.0
# A lock file is empty from its O_EXCL creation until its holder's write a moment later.
WRITE_GRACE_SECONDS = 2.0
WAIT_POLL_SECONDS = 5.0  # how often a waiting runner (wait=True) looks at a held lock again


def process_alive(pid) -> bool:
    """Whether a process with this pid exists on this host (one we may not signal exists too)."""
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, OverflowError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _slurm_identity() -> tuple[str | None, int]:
    return os.environ.get("SLURM_JOB_ID"), int(os.environ.get("SLURM_RESTART_COUNT") or 0)


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


@dataclass(frozen=True)
class LockHolder:
    """Who holds a cell's lock, as its lock file says (`raw`: the file's text, to re-judge it)."""

    pid: int | None
    host: str | None
    started: float
    heartbeat: float
    token: str | None
    slurm_job: str | None
    slurm_restart: int
    raw: str

    def describe(self) -> str:
        if self.pid is None:
            return f"a runner whose lock file is unreadable, since {_utc(self.started)}"
        return f"pid {self.pid} on host {self.host} since {_utc(self.started)}"

    def gone_because(self, now: float, stale_after: float) -> str | None:
        """Why the holder is provably gone, or None when it may be alive."""
        job, restart = _slurm_identity()
        if self.pid is not None and self.host == socket.gethostname():
            return None if process_alive(self.pid) else f"pid {self.pid} no longer exists"
        if job is not None and self.slurm_job == job and self.slurm_restart < restart:
            return f"Slurm job {job} was requeued (restart {self.slurm_restart} -> {restart})"
        silent = now - self.heartbeat
        return f"no heartbeat for {silent:.0f} s (bound {stale_after:.0f} s)" if silent > stale_after else None


def read_holder(path: Path) -> LockHolder | None:
    """The lock file's holder; None when there is no lock file. O_EXCL creates the file before its
    holder writes it, so an empty or torn file is read again until it is WRITE_GRACE_SECONDS old; one
    still not valid JSON then (its holder killed in between) is judged by its modification time alone."""
    while True:
        try:
            raw = path.read_text(encoding="utf-8")
            modified = path.stat().st_mtime
        except FileNotFoundError:
            return None
        holder = _parse_holder(raw)
        if holder is not None:
            return holder
        if time.time() > modified + WRITE_GRACE_SECONDS:
            return LockHolder(None, None, modified, modified, None, None, 0, raw)
        time.sleep(0.02)


def _parse_holder(raw: str) -> LockHolder | None:
    try:
        record = json.loads(raw)
        started = float(record["started"])
        return LockHolder(
            pid=int(record["pid"]),
            host=str(record["host"]),
            started=started,
            heartbeat=float(record.get("heartbeat", started)),
            token=record.get("token"),
            slurm_job=record.get("slurm_job"),
            slurm_restart=int(record.get("slurm_restart") or 0),
            raw=raw,
        )
    except (ValueError, KeyError, TypeError):
        return None


class CellLock:
    """The lock of one cell folder. Use as a context manager; it is released on leaving, on an
    exception too:

        with CellLock(folder, cell_name, log) as lock:
            if not lock.acquired:
                return "running"          # the skip line is logged already
            ... check done, train ...

    `wait=True` waits for a live holder (polling) instead of skipping: for stages whose result
    the runner needs next."""

    def __init__(
        self,
        folder: str | os.PathLike,
        name: str,
        log=print,
        wait: bool = False,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        stale_after: float = STALE_AFTER_SECONDS,
        poll_seconds: float | None = None,
    ):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.name = name
        self.log = log
        self.wait = wait
        self.heartbeat_seconds = heartbeat_seconds
        self.stale_after = stale_after
        self.poll_seconds = WAIT_POLL_SECONDS if poll_seconds is None else poll_seconds
        self.acquired = False
        self._started = 0.0  # when this runner took the lock (kept in every heartbeat)
        self.holder: LockHolder | None = None  # the other runner's, when not acquired
        self._token = secrets.token_hex(8)
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def skip_line(self) -> str:
        return f"cell {self.name} is being trained by {self.holder.describe()}; skipping"

    def __enter__(self) -> CellLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    def acquire(self) -> bool:
        """Take the lock (recovering a stale one); else log who holds it and skip, or wait for it."""
        said_waiting = False
        while True:
            holder = self._try_once()
            if holder is None:
                return True
            self.holder = holder
            if not self.wait:
                self.log(self.skip_line())
                return False
            if not said_waiting:
                self.log(f"cell {self.name} is being trained by {holder.describe()}; waiting")
                said_waiting = True
            time.sleep(self.poll_seconds)

    def _try_once(self) -> LockHolder | None:
        """None when the lock is ours now; else its live holder."""
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                holder = read_holder(self.path)
                if holder is None:
                    continue  # released between our create and our read
                reason = holder.gone_because(time.time(), self.stale_after)
                if reason is None:
                    return holder
                self._break_stale(holder, reason)
                continue
            now = time.time()
            try:
                with open(fd, "w", encoding="utf-8") as handle:
                    handle.write(json.dumps(self._record(now, now), indent=2) + "\n")
                    handle.flush()
                    os.fsync(handle.fileno())
            except BaseException:  # e.g. a full disk: leave no empty lock behind for 10 minutes
                self.path.unlink(missing_ok=True)
                raise
            self._started = now
            self.acquired = True
            self._start_heartbeat()
            return None

    def _record(self, started: float, heartbeat: float) -> dict:
        job, restart = _slurm_identity()
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": started,
            "started_utc": _utc(started),
            "heartbeat": heartbeat,
            "token": self._token,
            "slurm_job": job,
            "slurm_restart": restart,
        }

    def _break_stale(self, judged: LockHolder, reason: str) -> None:
        guard = self.path.with_name(self.path.name + BREAKING_SUFFIX)
        try:
            fd = os.open(guard, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                if time.time() - guard.stat().st_mtime > BREAKING_STALE_SECONDS:
                    guard.unlink()
            time.sleep(0.05)  # another runner is breaking it; look again
            return
        try:
            current = read_holder(self.path)
            # Judged again under the guard: unchanged (no heartbeat since) and still gone.
            if (
                current is not None
                and current.raw == judged.raw
                and current.gone_because(time.time(), self.stale_after)
            ):
                self.path.unlink()
                self.log(f"cell {self.name}: recovered the stale lock of {judged.describe()} ({reason})")
        finally:
            os.close(fd)
            guard.unlink(missing_ok=True)

    def _owned(self) -> bool:
        holder = read_holder(self.path)
        return holder is not None and holder.token == self._token

    def _start_heartbeat(self) -> None:
        def beat():
            while not self._stop.wait(self.heartbeat_seconds):
                # A failed write (a full disk, a shared filesystem's hiccup) is tried again at the
                # next beat: the bound allows nine misses.
                with contextlib.suppress(OSError):
                    if self._owned():  # never rewrite a lock another runner took over
                        write_json_atomic(self.path, self._record(self._started, time.time()))

        self._stop.clear()
        self._heartbeat = threading.Thread(target=beat, name=f"cell-lock-{self.name}", daemon=True)
        self._heartbeat.start()

    def release(self) -> None:
        """Stop the heartbeat and remove the lock file if it is still ours (no-op when not held)."""
        if not self.acquired:
            return
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        if self._owned():
            self.path.unlink(missing_ok=True)
        self.acquired = False
