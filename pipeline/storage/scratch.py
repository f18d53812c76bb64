"""Scratch folders for local copies (a checkpoint fetched from an object store, training staging),
removed when their owner is done with them, and, when the owner was killed first, by the next
owner that starts on the same machine.

Every folder lives under one parent per user (SCRATCH_ROOT) and is named after its owner process:
`<pid namespace>-<pid>-<process start time>-<purpose>-<random>`. Creating a folder first removes
the folders whose owner is gone: same pid namespace, and no process with that pid and that start
time (so a pid the system reused does not keep a dead owner's copy alive, and a folder of another
container sharing the disk is never judged from this one's process table).
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

from op4ksr.errors import UserError

SCRATCH_ROOT = Path(tempfile.gettempdir()) / f"op4ksr-scratch-{os.getuid()}"
_NAME = re.compile(r"(?P<ns>\d+)-(?P<pid>\d+)-(?P<start>\d+)-[\w.-]+")


def _namespace() -> str:
    try:
        return re.sub(r"\D", "", os.readlink("/proc/self/ns/pid")) or "0"
    except OSError:
        return "0"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22); None: no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        if Path("/proc/self/stat").exists():
            return None
        try:  # no /proc (not Linux): the pid alone tells
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except OSError:
            pass
        return "0"
    return stat.rsplit(")", 1)[1].split()[19]  # after the command name, which may hold spaces


def owner_prefix() -> str:
    """`<pid namespace>-<pid>-<start time>`: the start of this process's folder names."""
    return f"{_namespace()}-{os.getpid()}-{_start_time(os.getpid())}"


def sweep(root: Path | None = None) -> list[Path]:
    """Remove the folders under `root` (default SCRATCH_ROOT) whose owner process is gone; the folders removed."""
    root = root or SCRATCH_ROOT
    removed, namespace = [], _namespace()
    for folder in root.glob("*") if root.is_dir() else ():
        match = _NAME.fullmatch(folder.name)
        if not match or match["ns"] != namespace or _start_time(int(match["pid"])) == match["start"]:
            continue
        shutil.rmtree(folder, ignore_errors=True)  # another sweeper may be removing it too
        removed.append(folder)
    return removed


def scratch_folder(purpose: str, root: Path | None = None) -> Path:
    """A new empty folder owned by this process under `root` (default SCRATCH_ROOT; `purpose` names it:
    model, import, ...); dead owners' folders are removed first. The caller removes it (or uses `scratch`)."""
    root = _private(root or SCRATCH_ROOT)
    sweep(root)
    folder = root / f"{owner_prefix()}-{purpose}-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    return folder


def _private(root: Path) -> Path:
    """`root`, made if missing, once it is a folder of this user's that no one else may enter: its name
    is known in advance, so in a shared /tmp another user could have made it first (or as a link)."""
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(root)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise UserError(f"{root} is not a folder private to this user (it is a link, another user's, or open to "
                        "others), so model copies are not put there: remove it, or set TMPDIR to a private folder")
    return root


@contextlib.contextmanager
def scratch(purpose: str, root: Path | None = None) -> Iterator[Path]:
    """A scratch folder for the block, removed at its end (on an exception too)."""
    folder = scratch_folder(purpose, root)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
