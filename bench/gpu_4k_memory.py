"""Full-size model under memory caps: model.offload=blocks and model.weights=int8 against resident bf16; prints JSON.

For each variant (bf16 resident, bf16 streamed, int8 resident, int8 streamed) and each cap (none,
24 GiB, 48 GiB: torch.cuda.set_per_process_memory_fraction), every output size is upscaled once
to warm up and then --repeats times: median seconds, peak device memory, the memory plan's
prediction and its `auto` limit for the cap, or the out-of-memory error. int8's PSNR against
bf16's output is given per size. The JSON is rewritten after each step, and steps that would
overrun --budget-s are listed as skipped. docs/GPU.md is the runbook; on a CPU (tests, the tiny
preset) caps are recorded as not applicable and peaks come from the profiler's allocation events.

usage: python bench/gpu_4k_memory.py --preset flux-dev --device cuda --json-out $OUT/gpu_4k_memory.json
       python bench/gpu_4k_memory.py --preset tiny --device cpu --sizes 64x64 --caps none --repeats 1
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from gpu_4k import Budget, device_info, make_input, parse_sizes, sync, time_call, versions  # noqa: E402
from op4ksr.imageops import psnr  # noqa: E402
from op4ksr.inference import memory_plan  # noqa: E402
from op4ksr.model import OP4KSR  # noqa: E402
from op4ksr.offload import streamer_of  # noqa: E402

GIB = 2**30
VARIANTS = {"bf16": ("dtype", "none"), "bf16_blocks": ("dtype", "blocks"), "int8": ("int8", "none"),
            "int8_blocks": ("int8", "blocks")}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="flux-dev", choices=("flux-dev", "tiny"))
    p.add_argument("--device", default="cuda")
    p.add_argument("--sizes", default="1024x1024,2048x2048,4096x4096", help="WxH,...")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"of {', '.join(VARIANTS)}")
    p.add_argument("--caps", default="none,24,48", help="GiB per process (none: the whole device)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--budget-s", type=float, default=420.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json-out", type=Path)
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        p.error(f"--variants: unknown {', '.join(sorted(unknown))}; choose from {', '.join(VARIANTS)}")
    return args


def set_cap(device: torch.device, cap: str) -> dict:
    """Limit this process's CUDA allocations to `cap` GiB; what was set (CPU: not applicable)."""
    if device.type != "cuda":
        return {"cap": cap, "applied": False, "note": "caps need CUDA"}
    total = torch.cuda.get_device_properties(device).total_memory
    fraction = 1.0 if cap == "none" else min(1.0, float(cap) * GIB / total)
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    torch.cuda.empty_cache()
    return {"cap": cap, "applied": True, "fraction": round(fraction, 4)}


def measure(model: OP4KSR, size: tuple[int, int], args, device: torch.device) -> tuple[dict, torch.Tensor]:
    """Warm-up, then --repeats upscales: seconds and the peak memory of one upscale."""
    x = make_input(size, int(model.scale), device, args.seed)
    with torch.inference_mode():
        first_s, out = time_call(lambda: model.upscale(x, size), device)
        if device.type == "cuda":
            sync(device)
            torch.cuda.reset_peak_memory_stats(device)
        times = [time_call(lambda: model.upscale(x, size), device)[0] for _ in range(args.repeats)]
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device)
        else:
            peak = memory_plan.measure_cpu_peak_bytes(lambda: model.upscale(x, size))[0]
    return {"first_call_seconds": round(first_s, 3), "seconds_median": round(statistics.median(times), 4),
            "peak_memory_bytes": int(peak), "peak_memory_gb": round(peak / 1e9, 3),
            "output_finite": bool(torch.isfinite(out).all())}, out.float().cpu()


def run_variant(name: str, args, device: torch.device, report: dict, budget: Budget, outputs: dict) -> None:
    weights, offload = VARIANTS[name]
    what = f"build {name}"
    if not budget.allows(what):
        return
    try:
        model = OP4KSR.from_preset(args.preset, seed=args.seed, dtype=torch.bfloat16, device=device,
                                   weights=weights, offload=offload)
    except Exception as error:  # e.g. resident bf16 flux-dev on a card smaller than its 24 GB
        report["errors"].append({"what": what, "error": f"{type(error).__name__}: {error}"[:300]})
        return
    mode = "int8" if weights == "int8" else "bfloat16"
    plan = memory_plan.MemoryPlan(args.preset, mode, offload=offload)
    for cap in args.caps.split(","):
        applied = set_cap(device, cap)
        for size in parse_sizes(args.sizes):
            step = f"{name} cap {cap} {size[1]}x{size[0]}"
            if not budget.allows(step):
                continue
            row = {"variant": name, "weights": weights, "offload": offload, "size": f"{size[1]}x{size[0]}",
                   **applied, "plan_peak_gb": round(plan.peak_bytes(*size) / 1e9, 3),
                   "plan_auto_max_megapixels": None if cap == "none" else round(plan.max_output_megapixels(float(cap)), 1)}
            try:
                stats, out = measure(model, size, args, device)
                row |= stats
                if streamer_of(model.transformer):
                    row["streamed_peak_live_bytes"] = streamer_of(model.transformer).peak_live_bytes
                reference = outputs.setdefault(size, out) if name == "bf16" else outputs.get(size)
                if reference is not None and name != "bf16":
                    row["psnr_vs_bf16_db"] = round(float(psnr(out, reference)), 2)
            except torch.cuda.OutOfMemoryError as error:
                row["error"] = f"out of memory: {str(error)[:200]}"
                torch.cuda.empty_cache()
            report["results"].append(row)
            write(report, args)
    set_cap(device, "none")
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()


def write(report: dict, args) -> None:
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2) + "\n")


def main(argv=None) -> dict:
    args = parse_args(argv)
    budget, device = Budget(args.budget_s), torch.device(args.device)
    report = {"bench": "gpu_4k_memory", "preset": args.preset, "command": " ".join(["bench/gpu_4k_memory.py"] + args.argv),
              "device": device_info(device), "versions": versions(), "results": [], "errors": [],
              "note": "random weights: memory and speed are the real model's; PSNR is random weights' error"}
    outputs: dict = {}
    t0 = time.perf_counter()
    for name in args.variants.split(","):
        run_variant(name, args, device, report, budget, outputs)
    report["budget"] = {"seconds": args.budget_s, "elapsed": round(time.perf_counter() - t0, 1), "skipped": budget.skipped}
    write(report, args)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
