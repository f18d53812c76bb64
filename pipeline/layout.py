"""Where things live under the output prefix (DESIGN.md §4)."""
from __future__ import annotations

import posixpath

from op4ksr.imagefile import EXTENSIONS
from pipeline.storage import safe_key

IMAGES, REPORTS, RUNS = "images/", "reports/", "runs/"


def output_image_key(input_key: str, fmt: str) -> str:
    """images/<input key with the output format's extension>."""
    stem, _ = posixpath.splitext(safe_key(input_key))
    return f"{IMAGES}{stem}{EXTENSIONS[fmt]}"


def report_key(input_key: str) -> str:
    """reports/<input key>.json: its presence (with matching ids) marks the input as done."""
    return f"{REPORTS}{safe_key(input_key)}.json"


def run_key(run_id: str, name: str) -> str:
    """runs/<run_id>/<name>."""
    return f"{RUNS}{run_id}/{name}"
