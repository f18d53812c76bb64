"""CPU cost of the evidence checks per 4096x4096 output (docs/PERFORMANCE.md): the map, faces, the text check.

Inputs 1024x1024, outputs their bicubic + back-projection upscale to 4096x4096 (what is checked
does not change the cost of the map; the text check costs what Tesseract reads). Cases:
- photo: a text-free photo (scikit-image's chelsea, resized), text_check auto (the detector alone)
  and on (Tesseract reads the whole image twice);
- text page: 64 lines of rendered 30 px text (7 px letters in the input), auto and on.
CPU seconds are this process's (torch on --threads threads) plus the tesseract processes' (wait4).

    nice -n 19 .venv/bin/python bench/fidelity.py --threads 1
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from op4ksr.fidelity import back_project  # noqa: E402
from op4ksr.imageops import bicubic_resize  # noqa: E402
from op4ksr.quality.contradiction import contradiction_maps  # noqa: E402
from op4ksr.quality.evidence import EvidenceOptions, image_evidence  # noqa: E402
from tests import planted  # noqa: E402

SIDE = 1024  # input px; the output is 4x


def cpu_now() -> float:
    """CPU seconds of this process and its waited-for children (tesseract) so far."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(call, repeats: int) -> tuple[float, float]:
    """(best wall seconds, best CPU seconds) of `repeats` calls, after one warm-up call."""
    call()
    walls, cpus = [], []
    for _ in range(repeats):
        c0, w0 = cpu_now(), time.perf_counter()
        call()
        walls.append(time.perf_counter() - w0)
        cpus.append(cpu_now() - c0)
    return min(walls), min(cpus)


def inputs() -> dict[str, torch.Tensor]:
    photo = bicubic_resize(planted.photo("chelsea"), (SIDE, SIDE)).clamp(0, 1)
    lines = [f"Line {i:02d}: catalogue 1987/{i:04d}, brass sextant c. 18{i % 100:02d}, lot {i * 37}" for i in range(64)]
    page = planted.downscale(planted.caption(lines, size=(4 * SIDE, 4 * SIDE), points=30))
    return {"photo": photo, "text page": page}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for name, lr in inputs().items():
        out = back_project(bicubic_resize(lr, (4 * SIDE, 4 * SIDE)), lr, 3).clamp(0, 1)
        wall, cpu = timed(lambda: contradiction_maps(out, lr), args.repeats)
        rows.append({"image": name, "check": "contradiction map", "wall_s": round(wall, 3), "cpu_s": round(cpu, 3)})
        result = contradiction_maps(out, lr)[0]
        for check, options in (("faces", EvidenceOptions(text_check="off", faces="on")),
                               ("text auto (+faces)", EvidenceOptions(text_check="auto", faces="on")),
                               ("text on (+faces)", EvidenceOptions(text_check="on", faces="on"))):
            repeats = 1 if "text" in check else args.repeats
            wall, cpu = timed(lambda o=options: image_evidence(out[0], lr[0], result, o), repeats)
            fields = image_evidence(out[0], lr[0], result, options).fields
            rows.append({"image": name, "check": check, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
                         "text_words": fields["text_words"], "text_reason": fields["text_reason"]})
        print(json.dumps(rows[-4:]), file=sys.stderr)
    print(json.dumps({"output": f"{4 * SIDE}x{4 * SIDE}", "torch_threads": args.threads, "torch": torch.__version__,
                      "python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
                      "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
