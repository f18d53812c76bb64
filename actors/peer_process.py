"""A command peer's process, contained: its own process group, killed whole on timeout or failure,
and only the tail of its stderr kept.

A program that starts children of its own (a shell script, a wrapper that spawns the real
upscaler) would leave them running after a timeout if only the direct child were killed: they
are adopted by PID 1 and hold a CPU or a GPU for ever. Each command runs in a new session (its
own process group) and the whole group is sent SIGKILL once the command has ended, timed out or
failed. Its stderr goes to a file in the image's temp folder and only its last bytes are read,
so a chatty program costs no memory.
"""
from __future__ import annotations

import os
import signal
import subprocess

STDERR_TAIL_BYTES = 4096  # read back from the end of the stderr file; the message keeps fewer characters


def run_contained(argv: list[str], timeout_s: float, stderr_path: str) -> tuple[int | None, str]:
    """(exit status, or None when it ran past `timeout_s`; the tail of its stderr). OSError if it cannot start."""
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                                   start_new_session=True)
    try:
        status = process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        status = None
    finally:
        _kill_group(process.pid)  # its children too, whatever became of it
        process.wait()
    return status, _tail(stderr_path)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is empty: every process in it has ended


def _tail(path: str) -> str:
    with open(path, "rb") as file:
        file.seek(0, os.SEEK_END)
        file.seek(max(0, file.tell() - STDERR_TAIL_BYTES))
        return file.read().decode(errors="replace")
