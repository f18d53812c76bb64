"""The `op4ksr` console script: one subcommand per job module.

Each job module owns its argument parser and exposes `main(argv) -> int`; this file only
dispatches, and imports a job's module (and so torch, Ray, ...) only when that job runs. A
UserError (op4ksr.errors) is printed as one line and exits with its status (2, or 1 for
InputsAreReadOnly); other errors keep their traceback.
"""
from __future__ import annotations

import importlib
import logging
import sys

# name -> (module, one-line summary)
COMMANDS = {
    "upscale": ("jobs.upscale", "upscale local image files or folders with the model"),
    "video": ("jobs.video", "upscale a video file or frame sequences shot by shot: FFV1 master, sound kept, flicker report"),
    "periodicity": ("jobs.periodicity", "score any images for periodic (token-grid) artifacts: table, JSON, heatmaps"),
    "fidelity": ("jobs.fidelity", "check upscaled images against their masters: contradicted cells, faces, text; heatmaps"),
    "train": ("jobs.train", "fine-tune the model (Ray Train; L1 + L_AP, LoRA or full, resumable checkpoints)"),
    "eval": ("jobs.eval", "score a model on a benchmark: PSNR/SSIM-Y, ap_excess, baselines, patch-based vs patch-free"),
    "bench-build": ("jobs.bench_build", "build a synthetic SR benchmark (HR crops, degraded LR, manifest)"),
    "backfill": ("jobs.backfill", "upscale a catalog under an object-store prefix with a Ray actor pool"),
    "calibrate": ("jobs.calibrate", "sweep the RFR scale on sample images and pick the one with the least artifacts"),
    "demo": ("jobs.demo", "run the backfill on sample images with an embedded S3 server and the tiny model"),
    "import": ("jobs.import_weights", "build a checkpoint from public Flux weights: pipeline folder, F16 VAE, LoRA"),
    "cost": ("jobs.cost", "cost per image, per run and per catalog from the runs' cost ledgers; a chart"),
    "report": ("jobs.report", "rebuild a run's cost.parquet, summary.json and report.html from its manifest"),
    "verify": ("jobs.verify", "check outputs' signed C2PA manifests: signature, hash binding, trust, parent, source type"),
    "provenance": ("jobs.provenance", "provenance tools: test-identity DIR makes a throwaway signing identity"),
    "compare": ("jobs.compare", "run variants (models, settings, other upscalers) over one sample of a catalog, side by side"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "usage: op4ksr COMMAND [options]   (op4ksr help COMMAND, or op4ksr COMMAND --help, for its options)",
        "",
        "One-step, patch-free 4K super-resolution (OP4KSR), on local files or as a batch job",
        "over object storage.",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return "\n".join(lines)


class _StderrLines(logging.Handler):
    """The library's notes (the 'op4ksr' logger: watermark moved, random-weight model...) as plain
    lines on the current stderr, looked up at each line so a redirected stderr is honoured."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stderr)


def show_notes() -> None:
    notes = logging.getLogger("op4ksr")
    notes.setLevel(logging.INFO)
    notes.propagate = False
    if not any(isinstance(h, _StderrLines) for h in notes.handlers):
        notes.addHandler(_StderrLines())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["help"] and len(argv) > 1 and argv[1] in COMMANDS:
        argv = [argv[1], "--help"]  # `op4ksr help CMD` is `op4ksr CMD --help`
    if not argv or argv[0] in ("-h", "--help", "help"):
        if len(argv) > 1 and argv[0] == "help":
            print(f"op4ksr: unknown command '{argv[1]}'\n\n{_usage()}", file=sys.stderr)
            return 2
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"op4ksr: unknown command '{name}'\n\n{_usage()}", file=sys.stderr)
        return 2
    from op4ksr.errors import UserError

    module = importlib.import_module(COMMANDS[name][0])
    show_notes()
    try:
        return int(module.main(rest) or 0)
    except UserError as err:  # something the user must fix: one line; anything else keeps its traceback
        print(f"op4ksr {name}: {err}", file=sys.stderr)
        return err.exit_status
    except KeyboardInterrupt:  # Ctrl-C where no job said more (before a run started, or in its finish phase)
        print(f"op4ksr {name}: interrupted; rerun the same command to resume (what a run finished is kept)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
