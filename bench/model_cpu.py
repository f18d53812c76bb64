"""Tiny-preset model speed and peak memory on CPU; prints one JSON object.

Each output size runs in a fresh child process so its peak RSS is its own.
usage: python bench/model_cpu.py [--sizes 1024,4096] [--repeats 3] [--partitions 0]
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time


def measure(size: int, repeats: int, partitions: int) -> dict:
    import torch

    from op4ksr.model import OP4KSR

    torch.manual_seed(0)
    model = OP4KSR.from_preset("tiny")
    model.decode_partitions = partitions
    x = torch.rand(1, 3, size // 4, size // 4)
    model.upscale(x, (size, size))  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.upscale(x, (size, size))
        times.append(time.perf_counter() - start)
    return {"output": f"{size}x{size}", "seconds_median": round(statistics.median(times), 3),
            "seconds_all": [round(t, 3) for t in times], "decode_partitions": partitions,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1024,4096")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=0)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.repeats, args.partitions)))
        return
    import torch

    results = []
    for size in map(int, args.sizes.split(",")):
        out = subprocess.run([sys.executable, __file__, "--child", str(size), "--repeats", str(args.repeats),
                              "--partitions", str(args.partitions)], capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(json.dumps({"bench": "model_cpu", "preset": "tiny", "device": "cpu", "threads": torch.get_num_threads(),
                      "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
                      "results": results}, indent=2))


if __name__ == "__main__":
    main()
