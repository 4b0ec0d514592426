"""Interrupting the replicate runner: Ctrl-C, kill -9, and resuming from a checkpoint.

Every scenario runs in a child process (``sys.executable``) in a session of its
own, so that signals reach only that process; the process group is killed in a
``finally`` block and every wait has a timeout, so a hang fails instead of
blocking the suite.  Worker processes are found by scanning ``/proc`` for the
child's children (Linux only).  Each child gets a private TMPDIR, so that its
``tempfile.gettempdir()`` can be checked for leftover ``mixboot-*`` files without
mistaking another process's files for its own.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import mixboot as mb

LINUX = sys.platform.startswith("linux")
needs_proc = pytest.mark.skipif(not LINUX, reason="scans /proc for worker processes")

FORMULA = "Reaction ~ 1 + Days + (1 + Days | Subject)"

# The child's preamble: the model of every scenario (REML=False, as the CLI's --ml).
PREAMBLE = textwrap.dedent(f"""
    import os, pickle, sys, time
    import mixboot as mb
    r = mb.fit({FORMULA!r}, mb.datasets.load("reaction"), REML=False)
""")


# --------------------------------------------------------------------------- helpers
def _stat(pid: int):
    """(state, ppid, starttime) of ``pid`` from /proc, or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            text = fh.read()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()  # the name may hold spaces and parentheses
    return fields[0], int(fields[1]), int(fields[19])


def _children(pid: int) -> dict[int, int]:
    """Live (non-zombie) children of ``pid``: {pid: starttime}."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = _stat(int(entry))
        if st is not None and st[1] == pid and st[0] != "Z":
            out[int(entry)] = st[2]
    return out


def _gone(pid: int, starttime: int) -> bool:
    """The process is dead: absent, a zombie, or its pid now names another process."""
    st = _stat(pid)
    return st is None or st[0] == "Z" or st[2] != starttime


def _wait_for(predicate, timeout: float, step: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > end:
            return False
        time.sleep(step)


class Child:
    """A child process in its own session; its output lines are time-stamped as they come."""

    def __init__(self, args, tmpdir: Path, cwd=None):
        tmpdir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1", TMPDIR=str(tmpdir))
        self.proc = subprocess.Popen(
            [str(a) for a in args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        self.pid = self.proc.pid
        self.lines: list[tuple[float, str]] = []
        self.cond = threading.Condition()
        self.eof = False
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    @classmethod
    def script(cls, body: str, tmp_path: Path) -> Child:
        path = tmp_path / "child.py"
        path.write_text(PREAMBLE + textwrap.dedent(body))
        return cls([sys.executable, path], tmp_path / "tmp")

    def _read(self):
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self.cond.notify_all()
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def output(self) -> str:
        with self.cond:
            return "\n".join(line for _, line in self.lines)

    def find(self, prefix: str):
        with self.cond:
            return next(((t, line) for t, line in self.lines if line.startswith(prefix)), None)

    def wait_line(self, prefix: str, timeout: float) -> tuple[float, str]:
        """(time it came, line) of the first line starting with ``prefix``; fails on timeout."""
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                hit = next(((t, line) for t, line in self.lines if line.startswith(prefix)), None)
                if hit is not None:
                    return hit
                left = end - time.monotonic()
                if self.eof or left <= 0:
                    break
                self.cond.wait(min(left, 0.1))
        pytest.fail(
            f"no line {prefix!r} within {timeout} s (exit code {self.proc.poll()}); "
            f"output:\n{self.output()}"
        )

    def wait(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"process still running after {timeout} s; output:\n{self.output()}")
        self.reader.join(5)
        return code

    def close(self):
        """Kill whatever is left of the process group, reap the child."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self.reader.join(5)
        with contextlib.suppress(Exception):
            self.proc.stdout.close()


def _workers(child: Child, n: int, timeout: float) -> dict[int, int]:
    """Wait for ``n`` worker processes of ``child``: {pid: starttime}."""
    found: dict[int, int] = {}

    def enough():
        found.clear()
        found.update(_children(child.pid))
        return len(found) >= n or child.proc.poll() is not None

    _wait_for(enough, timeout)
    assert len(found) >= n, (
        f"expected {n} worker processes of {child.pid}, found "
        f"{sorted(found)}; output:\n{child.output()}"
    )
    return found


def _mixboot_temp(tmpdir: Path) -> set[str]:
    return set(glob.glob(os.path.join(str(tmpdir), "mixboot-*")))


def _chunks(directory: Path) -> list[str]:
    return sorted(glob.glob(os.path.join(str(directory), "chunk-*.pkl")))


def _temporaries(directory: Path) -> list[str]:
    return sorted(glob.glob(os.path.join(str(directory), ".tmp-*")))


def _same_bits(a, b):
    assert a.estimates.shape == b.estimates.shape
    assert a.estimates.tobytes() == b.estimates.tobytes()
    assert a.tbl.equals(b.tbl)
    assert a.diagnostics.equals(b.diagnostics)
    assert a.failures.equals(b.failures)


@pytest.fixture(scope="module")
def fit_ml():
    return mb.fit(FORMULA, mb.datasets.load("reaction"), REML=False)


# --------------------------------------------------------------------------- Ctrl-C
@needs_proc
def test_ctrl_c_with_workers_stops_them_and_a_new_parallel_run_works(tmp_path):
    child = Child.script(
        """
        print("STARTING", flush=True)
        try:
            mb.bootMer(r, B=200000, seed=1, n_jobs=2)
            print("FINISHED", flush=True)
            sys.exit(3)
        except KeyboardInterrupt:
            print("INTERRUPTED", flush=True)
        t = time.perf_counter()
        b = mb.bootMer(r, B=200, seed=2, n_jobs=2)
        seconds = time.perf_counter() - t
        live = []                             # this process's live children, workers included
        for entry in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == os.getpid() and fields[0] != "Z":
                live.append(entry)
        print("FOLLOWUP", seconds, b.B, int(b.diagnostics["converged"].sum()), len(live),
              flush=True)
    """,
        tmp_path,
    )
    tmpdir = tmp_path / "tmp"
    before = _mixboot_temp(tmpdir)
    try:
        child.wait_line("STARTING", 60)
        workers = _workers(child, 2, 30)
        time.sleep(0.5)  # the workers are busy with chunks
        assert child.proc.poll() is None and child.find("FINISHED") is None
        sent = time.monotonic()
        os.kill(child.pid, signal.SIGINT)
        handled, _ = child.wait_line("INTERRUPTED", 10)
        assert handled - sent < 2.0, f"the interrupt took {handled - sent:.2f} s to be handled"
        all_gone = _wait_for(
            lambda: all(_gone(p, s) for p, s in workers.items()),
            max(0.0, sent + 2.0 - time.monotonic()),
        )
        left = [p for p, s in workers.items() if not _gone(p, s)]
        assert all_gone, f"workers {left} still alive 2 s after Ctrl-C"
        _, line = child.wait_line("FOLLOWUP", 30)
        seconds, B, converged, live = line.split()[1:]
        assert float(seconds) < 10.0, f"the parallel run after Ctrl-C took {seconds} s"
        assert int(B) == 200 and int(converged) > 0
        assert int(live) == 0, f"{live} worker processes outlived the runs"
        assert child.wait(30) == 0, child.output()
    finally:
        child.close()
    assert _mixboot_temp(tmpdir) - before == set()


@needs_proc
def test_ctrl_c_serial_stops_within_two_seconds(tmp_path):
    child = Child.script(
        """
        print("STARTING", flush=True)
        try:
            mb.bootMer(r, B=200000, seed=1, n_jobs=1)
            print("FINISHED", flush=True)
            sys.exit(3)
        except KeyboardInterrupt:
            print("INTERRUPTED", flush=True)
    """,
        tmp_path,
    )
    try:
        child.wait_line("STARTING", 60)
        time.sleep(0.7)  # well inside the replicate loop
        assert child.proc.poll() is None and child.find("FINISHED") is None
        sent = time.monotonic()
        os.kill(child.pid, signal.SIGINT)
        handled, _ = child.wait_line("INTERRUPTED", 10)
        assert handled - sent < 2.0, f"the interrupt took {handled - sent:.2f} s to be handled"
        assert child.wait(10) == 0, child.output()
    finally:
        child.close()


@needs_proc
def test_ctrl_c_keeps_the_checkpoint_and_the_resumed_run_has_the_same_bits(tmp_path, fit_ml):
    B = 60000  # a straight serial run: 4-8 s here; Ctrl-C comes at >= 2.6 s
    ckpt = tmp_path / "ckpt"
    out = tmp_path / "resumed.pkl"
    body = f"""
        try:
            boot = mb.bootMer(r, B={B}, seed=11, checkpoint={str(ckpt)!r})
        except KeyboardInterrupt:
            print("INTERRUPTED", flush=True)
            sys.exit(0)
        with open({str(out)!r}, "wb") as fh:
            pickle.dump(boot, fh)
        print("FINISHED", boot.meta["checkpoint"]["loaded"], flush=True)
    """
    first = Child.script(body, tmp_path)
    try:
        # The first chunk file is written CHECKPOINT_INTERVAL (2 s) into the run.
        assert _wait_for(lambda: _chunks(ckpt) or first.proc.poll() is not None, 60)
        time.sleep(0.6)  # finished chunks wait for the next write
        assert first.proc.poll() is None, f"the run ended before Ctrl-C:\n{first.output()}"
        files_before = _chunks(ckpt)
        sent = time.monotonic()
        os.kill(first.pid, signal.SIGINT)
        handled, _ = first.wait_line("INTERRUPTED", 10)
        assert handled - sent < 2.0, f"the interrupt took {handled - sent:.2f} s to be handled"
        assert first.wait(10) == 0, first.output()
    finally:
        first.close()
    files_after = _chunks(ckpt)
    assert len(files_after) > len(files_before), (
        "the chunks finished since the last write were not saved on Ctrl-C"
    )
    assert _temporaries(ckpt) == []
    second = Child.script(body, tmp_path)
    try:
        straight = mb.bootMer(fit_ml, B=B, seed=11)  # meanwhile, on the other core
        _, line = second.wait_line("FINISHED", 90)
        assert second.wait(30) == 0, second.output()
    finally:
        second.close()
    with open(out, "rb") as fh:
        resumed = pickle.load(fh)
    loaded, computed = resumed.meta["checkpoint"]["loaded"], resumed.meta["checkpoint"]["computed"]
    assert 0 < loaded < B and loaded + computed == B
    assert int(line.split()[1]) == loaded
    _same_bits(resumed, straight)
    assert _temporaries(ckpt) == []


# --------------------------------------------------------------------------- kill -9
@needs_proc
def test_kill_9_of_the_parent_ends_its_workers(tmp_path):
    child = Child.script(
        """
        print("STARTING", flush=True)
        mb.bootMer(r, B=200000, seed=1, n_jobs=2)
        print("FINISHED", flush=True)
    """,
        tmp_path,
    )
    try:
        child.wait_line("STARTING", 60)
        workers = _workers(child, 2, 30)
        time.sleep(0.3)
        assert child.proc.poll() is None
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
        all_gone = _wait_for(lambda: all(_gone(p, s) for p, s in workers.items()), 5.0)
        left = [p for p, s in workers.items() if not _gone(p, s)]
        assert all_gone, f"workers {left} outlived their parent by more than 5 s"
    finally:
        child.close()


# --------------------------------------------------------------------------- the CLI
def _cli() -> list:
    exe = Path(sys.executable).parent / "mixboot"
    return [exe] if exe.exists() else [sys.executable, "-m", "mixboot.cli"]


@needs_proc
def test_cli_killed_mid_run_resumes_to_the_same_bits(tmp_path):
    """The acceptance test: kill -9 a checkpointed ``mixboot boot``, run it again, and get
    what a straight run gives, bit for bit, having computed only the missing replicates."""
    N = 60000  # 4-8 s of refits; the kill comes at >= 2.2 s
    data = tmp_path / "data.csv"
    mb.datasets.load("reaction").to_csv(data, index=False)
    ckpt = tmp_path / "ckpt"
    resumed_file, straight_file = tmp_path / "resumed.parquet", tmp_path / "straight.parquet"
    base = _cli() + ["boot", data, FORMULA, "--ml", "-B", N, "--seed", 7]
    with_ckpt = base + ["--checkpoint", ckpt, "--out", resumed_file]
    straight = Child(base + ["--out", straight_file], tmp_path / "tmp-straight")
    try:
        first = Child(with_ckpt, tmp_path / "tmp-first")
        try:
            assert _wait_for(lambda: _chunks(ckpt) or first.proc.poll() is not None, 60)
            time.sleep(0.2)
            assert first.proc.poll() is None, f"the run ended before the kill:\n{first.output()}"
            os.kill(first.pid, signal.SIGKILL)
            assert first.wait(10) == -signal.SIGKILL
        finally:
            first.close()
        assert not resumed_file.exists()
        again = Child(with_ckpt, tmp_path / "tmp-again")
        try:
            assert again.wait(120) == 0, again.output()
        finally:
            again.close()
        assert straight.wait(120) == 0, straight.output()
    finally:
        straight.close()
    assert "saved to" in again.output()
    assert _temporaries(ckpt) == []
    resumed, plain = mb.BootResult.load(resumed_file), mb.BootResult.load(straight_file)
    info = resumed.meta["checkpoint"]
    assert 0 < info["loaded"] < N and info["loaded"] + info["computed"] == N
    assert resumed.B == plain.B == N
    assert resumed.estimates.tobytes() == plain.estimates.tobytes()
    assert resumed.tbl.equals(plain.tbl)
    assert resumed.diagnostics.equals(plain.diagnostics)


# --------------------------------------------------------------------------- extending
def test_a_larger_B_extends_a_checkpoint_bit_for_bit(tmp_path, fit_ml):
    ckpt = tmp_path / "ckpt"
    small = mb.bootMer(fit_ml, B=300, seed=5, checkpoint=ckpt)
    assert small.meta["checkpoint"] == {"loaded": 0, "computed": 300}
    extended = mb.bootMer(fit_ml, B=700, seed=5, checkpoint=ckpt)
    assert extended.meta["checkpoint"] == {"loaded": 300, "computed": 400}
    straight = mb.bootMer(fit_ml, B=700, seed=5)
    _same_bits(extended, straight)
    assert small.estimates.tobytes() == straight.estimates[:300].tobytes()
    again = mb.bootMer(fit_ml, B=700, seed=5, checkpoint=ckpt)
    assert again.meta["checkpoint"] == {"loaded": 700, "computed": 0}
    _same_bits(again, straight)
