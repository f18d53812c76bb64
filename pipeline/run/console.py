"""Console output of a run: progress lines and the closing summary table."""
from __future__ import annotations

import sys
import time


def progress_printer(every_seconds: float = 5.0, stream=None):
    """A Progress callback printing one line at most every `every_seconds` (and at the end) on `stream`
    (default: sys.stderr as it is when a line is printed, so a redirected stderr is honoured)."""
    last = [0.0]

    def show(progress) -> None:
        now = time.monotonic()
        if now - last[0] >= every_seconds or progress.done == progress.total:
            last[0] = now
            print(progress.line(), file=stream or sys.stderr, flush=True)

    return show


def print_summary(summary, cfg=None, stream=None) -> None:
    """The run summary as an aligned table, then its cost table (pipeline.ledger.cost) and the report page's
    uri, on `stream` (default: sys.stdout as it is now)."""
    stream = stream or sys.stdout
    cost = summary.cost or {}
    rows = [("run", summary.run_id), ("inputs listed", summary.total), ("ok", summary.ok),
            ("failed", summary.failed), ("skipped (already done)", summary.skipped),
            ("flagged (periodic artifacts)", summary.flagged), ("wall seconds", f"{summary.seconds:.1f}"),
            ("device seconds", f"{summary.gpu_seconds:.2f}"), ("CPU seconds", f"{summary.cpu_seconds:.2f}"),
            ("MB in / out", f"{summary.bytes_in / 1e6:.2f} / {summary.bytes_out / 1e6:.2f}"),
            ("model actors: peak / mean", f"{summary.actors_peak} / {summary.actors_mean:.2f}"),
            ("actor restarts / nodes lost", f"{summary.actor_restarts} / {summary.lost_nodes}"),
            *([("C2PA manifests: signed / sidecar / none", " / ".join(str(summary.c2pa.get(k, 0))
                                                                       for k in ("signed", "sidecar", "none")))]
              if summary.c2pa else []),
            ("manifest", summary.manifest_uri), ("summary", summary.summary_uri)]
    if summary.dry_run:
        rows.insert(1, ("mode", "dry run: listed only, nothing processed"))
        estimate = summary.estimate or {}
        if "due" in estimate:
            usd = estimate["estimated_usd"]
            price = ("unknown: no finished run under this output prefix yet (try run.limit=20)" if usd is None
                     else f"{usd:.4f} USD at {estimate['usd_per_image']:.6f} USD/image (run {estimate['basis_run']})")
            rows[2:2] = [("due (not done yet)", estimate["due"]), ("estimated cost", price)]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}", file=stream)
    if cost:
        from pipeline.ledger.cost import format_cost

        print("\n" + format_cost(cost), file=stream)
    if summary.report_uri:
        print(f"\nreport: {summary.report_uri}", file=stream)
