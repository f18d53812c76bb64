"""CPU seconds of NIQE (op4ksr.quality.niqe) per 4096x4096 output, one thread, as JSON.

The image is scikit-image's astronaut enlarged 8x (bicubic) plus a little grain, so that no block
is flat; NIQE's work does not depend on the content. The per-image report's whole no-reference
step (NIQE + colour shift, op4ksr.quality.report) is timed too. Budget (issue 23): 1 CPU-s.

    .venv/bin/python bench/niqe.py [--size 4096 4096] [--repeats 3] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root

from op4ksr.imageops import bicubic_resize  # noqa: E402
from op4ksr.quality.niqe import niqe  # noqa: E402
from op4ksr.quality.report import no_reference_scores  # noqa: E402


def test_image(size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_sr (1, 3, H, W), x_lr (1, 3, H/4, W/4)) in [0, 1]: an enlarged photo with grain, and its input."""
    import skimage.data

    photo = torch.from_numpy(skimage.data.astronaut().astype(np.float32) / 255).permute(2, 0, 1)[None]
    grain = 0.01 * torch.randn(1, 1, *size, generator=torch.Generator().manual_seed(0))
    x_sr = (bicubic_resize(photo, size) + grain).clamp(0, 1)
    return x_sr, bicubic_resize(x_sr, (size[0] // 4, size[1] // 4)).clamp(0, 1)


def timed(fn, repeats: int) -> tuple[list[float], list[float], object]:
    """(wall seconds, process CPU seconds, last result) of `repeats` calls after one warm-up call."""
    result = fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall, cpu, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=(4096, 4096), metavar=("H", "W"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: the budget is per core)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    size = tuple(args.size)
    x_sr, x_lr = test_image(size)
    load = round(os.getloadavg()[0], 2)
    wall, cpu, score = timed(lambda: niqe(x_sr[0]), args.repeats)
    r_wall, r_cpu, report = timed(lambda: no_reference_scores(x_sr, x_lr), args.repeats)
    print(json.dumps({
        "size": list(size), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "numpy": np.__version__, "python": platform.python_version(), "machine": platform.machine(),
        "processor": platform.processor(), "cpu_cores": os.cpu_count(),
        "load_average_1m_before": load,  # the CPU is shared: read wall timings with it
        "niqe": round(score, 4),
        "niqe_process_cpu_seconds_median": round(statistics.median(cpu), 3),
        "niqe_process_cpu_seconds_all": [round(c, 3) for c in cpu],
        "niqe_wall_seconds_median": round(statistics.median(wall), 3),
        "report_step_process_cpu_seconds_median": round(statistics.median(r_cpu), 3),
        "report_step_wall_seconds_median": round(statistics.median(r_wall), 3),
        "report_step": report[0],
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
