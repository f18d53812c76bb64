"""Where things live under the output prefix (docs/ARCHITECTURE.md)."""
from __future__ import annotations

from op4ksr.images.output_names import output_name
from pipeline.storage import safe_key

IMAGES, REPORTS, RUNS = "images/", "reports/", "runs/"


class UnsafeKeyError(ValueError):
    """An input key that cannot name an output under the output prefix (`..`, a leading `/`, ...)."""


def _output_name(input_key: str) -> str:
    try:
        return safe_key(input_key)
    except ValueError as err:  # S3 lists such keys; writing them could leave the prefix, so the input fails
        raise UnsafeKeyError(f"input key cannot be written under the output prefix: {err}") from None


def output_image_key(input_key: str, fmt: str) -> str:
    """images/<input key with the output format's extension>; UnsafeKeyError for keys that could escape."""
    return IMAGES + output_name(_output_name(input_key), fmt)


def report_key(input_key: str) -> str:
    """reports/<input key>.json: its presence (with matching ids) marks the input as done."""
    return f"{REPORTS}{_output_name(input_key)}.json"


def heatmap_key(input_key: str) -> str:
    """reports/<input key>.contradiction.png: the contradiction map of a flagged output (docs/QUALITY.md)."""
    return f"{REPORTS}{_output_name(input_key)}.contradiction.png"


def run_key(run_id: str, name: str) -> str:
    """runs/<run_id>/<name>."""
    return f"{RUNS}{run_id}/{name}"
