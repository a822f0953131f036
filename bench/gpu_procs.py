"""Worker processes of bench/gpu.py, started together: the GPU machine has no Ray, so concurrent
trials are plain processes. Each worker builds its trial, warms it up, says it is ready with a file
in a shared folder and waits for a ``go`` file holding one start time (wall clock); the parent
writes it once every worker is ready, so set-up (imports, data, recording the graph) is never
timed and all workers measure the same interval. Standard library only."""
from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

POLL_S = 0.01


class WorkerFailed(RuntimeError):
    """A worker exited with an error, or did not get ready or finish in time."""


@dataclass(frozen=True)
class Barrier:
    folder: Path

    def ready(self, worker: int) -> None:
        (self.folder / f"ready.{worker}").touch()

    def ready_count(self) -> int:
        return len(list(self.folder.glob("ready.*")))

    def release(self, start: float) -> None:
        """Tell every worker to start at wall-clock time ``start`` (written atomically)."""
        scratch = self.folder / "go.tmp"
        scratch.write_text(json.dumps({"start": start}))
        os.replace(scratch, self.folder / "go")

    def wait(self, timeout: float) -> float:
        """Block until released; returns the start time. WorkerFailed after ``timeout`` s."""
        go = self.folder / "go"
        deadline = time.monotonic() + timeout
        while not go.exists():
            if time.monotonic() > deadline:
                raise WorkerFailed(f"no start signal in {self.folder} after {timeout:.0f} s")
            time.sleep(POLL_S)
        return float(json.loads(go.read_text())["start"])


def sleep_until(wall_time: float) -> None:
    delay = wall_time - time.time()
    if delay > 0:
        time.sleep(delay)


def _tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.strip().splitlines()[-lines:]) or "(no output)"


def run_together(commands: list[list[str]], barrier: Barrier, *, ready_timeout: float,
                 run_timeout: float, lead_s: float = 0.5,
                 env: dict[str, str] | None = None) -> list[str]:
    """Start every command, release them together once all are ready, and return each one's
    standard output. A worker that fails stops the rest (WorkerFailed with its error output)."""
    procs: list[subprocess.Popen] = []
    outs = [barrier.folder / f"out.{i}" for i in range(len(commands))]
    errs = [barrier.folder / f"err.{i}" for i in range(len(commands))]
    try:
        for command, out, err in zip(commands, outs, errs):
            with open(out, "wb") as stdout, open(err, "wb") as stderr:
                procs.append(subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env))
        deadline = time.monotonic() + ready_timeout
        while barrier.ready_count() < len(commands):
            for i, proc in enumerate(procs):
                if proc.poll() is not None:
                    raise WorkerFailed(f"worker {i} exited ({proc.returncode}) before it was "
                                       f"ready:\n{_tail(errs[i])}")
            if time.monotonic() > deadline:
                raise WorkerFailed(f"only {barrier.ready_count()} of {len(commands)} workers were "
                                   f"ready after {ready_timeout:.0f} s")
            time.sleep(POLL_S * 5)
        barrier.release(time.time() + lead_s)
        for i, proc in enumerate(procs):
            try:
                code = proc.wait(timeout=run_timeout)
            except subprocess.TimeoutExpired:
                raise WorkerFailed(f"worker {i} did not finish in {run_timeout:.0f} s") from None
            if code != 0:
                raise WorkerFailed(f"worker {i} failed ({code}):\n{_tail(errs[i])}")
        return [out.read_text(errors="replace") for out in outs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
