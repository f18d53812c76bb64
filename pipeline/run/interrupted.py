"""Ctrl-C during a run: what was finished is recorded, and the user is told how to resume.

A run interrupted while its images are processed still closes its manifest and runs its finish
phase (cost ledger, summary.json, report page: pipeline/ledger/finish.py) for the rows it has, so
every image it finished is priced and a rerun (which skips them) or a comparison can count them.
It does not move the --since watermark. The CLI prints RunInterrupted as one line, exit status 130.
"""
from __future__ import annotations

from op4ksr.errors import UserError


class RunInterrupted(UserError):
    """The run was interrupted (Ctrl-C, SIGINT); `summary` is what it finished and recorded (None: nothing)."""

    exit_status = 130  # 128 + SIGINT, as a shell reports it

    def __init__(self, message: str, summary=None):
        super().__init__(message)
        self.summary = summary


def interrupted_message(summary, resume: str = "rerun the same command") -> str:
    """One line: what the interrupted run finished, where it is recorded, and how to resume."""
    return (f"interrupted: run {summary.run_id} finished {summary.ok} ok, {summary.failed} failed and "
            f"{summary.skipped} skipped of {summary.total} listed inputs, recorded in its manifest and cost ledger "
            f"({summary.summary_uri}); {resume} to resume: finished images are skipped")
