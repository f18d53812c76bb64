"""Full-size model speed and memory on one GPU, patch-free against patch-based; prints one JSON object.

Builds the preset with random weights directly on the device in bf16, then per output size times
VAE encode, transformer, VAE decode and the whole one-step upscale (median of --repeats after a
warm-up), with peak memory, TFLOP/s and utilisation of the device's peak; then the patch-based
baseline (tiles + linear blending) with its seam score; then FP8 mode with its PSNR against bf16.
The JSON is rewritten after each step, so a run stopped at its time limit still leaves data, and
sizes that would overrun --budget-s are skipped and listed. docs/GPU.md is the runbook.

usage: python bench/gpu_4k.py --preset flux-dev --device cuda --json-out $OUT/gpu_4k.json
       python bench/gpu_4k.py --preset tiny --device cpu --sizes 256x256,512x384 --repeats 3
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a bare checkout (no pip install)
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from op4ksr.inference import memory_plan, speed  # noqa: E402
from op4ksr.imageops import bicubic_resize, pad_to_multiple, psnr  # noqa: E402
from op4ksr.model import OP4KSR, estimate_tflop  # noqa: E402
from op4ksr.presets import get_preset  # noqa: E402
from op4ksr.inference.tiling import tile_plan, upscale_tiled  # noqa: E402  (tiles accumulate on the model's device)
from patch_baseline import seam_score  # noqa: E402

# dense (no sparsity) tensor-core peaks in TFLOP/s from the vendors' datasheets, most specific name first
DEVICE_PEAKS = (("H100 NVL", 835, 1671), ("H100 PCIe", 756, 1513), ("H100", 989, 1979), ("H200 NVL", 835, 1671),
                ("H200", 989, 1979), ("H20", 148, 296), ("A100", 312, None), ("L40S", 362, 733))
TARGETS = {"bf16": (0.7, 40.0), "fp8": (0.45, 24.0)}  # at 4096x4096: seconds, peak GB (issue 8)
TILE_PX = {"flux-dev": (1024, 128), "tiny": (128, 32)}  # patch-based tile and overlap, output px
STAGES = ("vae_encode", "transformer", "vae_decode", "end_to_end")
BASE_MODES = {"bf16": torch.bfloat16, "fp32": torch.float32}  # the model's dtype; fp8 converts it afterwards


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="flux-dev", choices=("flux-dev", "tiny"))
    p.add_argument("--device", default="cuda")
    p.add_argument("--sizes", default="1024x1024,2048x2048,3840x2160,4096x4096", help="WxH,...")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--modes", default="bf16,fp8", help="a base mode (bf16, or fp32 for CPU tests), then optionally fp8")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="default: on for cuda")
    p.add_argument("--compile-dynamic", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--cuda-graphs", action="store_true", help="compile mode reduce-overhead (experimental)")
    p.add_argument("--attention", default="auto", help="auto | native | flash | _native_cudnn | _native_flash ...")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None, help="default: on for cuda")
    p.add_argument("--fp8-backend", default="auto", choices=("auto", "torchao", "native"))
    p.add_argument("--patch-sizes", default="largest", help="patch-based baseline sizes: largest | none | WxH,...")
    p.add_argument("--tile", type=int, help="patch-based tile side in output px (default by preset)")
    p.add_argument("--tile-overlap", type=int, help="overlap in output px (default by preset)")
    p.add_argument("--vae-variants", action=argparse.BooleanOptionalAction, default=True,
                   help="at the largest size also time the other VAE layout and a 4-strip partitioned decode")
    p.add_argument("--budget-s", type=float, default=330.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json-out", type=Path)
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    modes = [m for m in args.modes.split(",") if m]
    if not modes or modes[0] not in BASE_MODES or set(modes[1:]) - {"fp8"}:
        p.error(f"--modes must be a base mode ({', '.join(BASE_MODES)}) optionally followed by fp8; got {args.modes!r}")
    args.base_mode, args.fp8 = modes[0], "fp8" in modes
    cuda = torch.device(args.device).type == "cuda"
    args.compile = cuda if args.compile is None else args.compile
    args.channels_last = cuda if args.channels_last is None else args.channels_last
    args.tile, args.tile_overlap = args.tile or TILE_PX[args.preset][0], args.tile_overlap or TILE_PX[args.preset][1]
    return args


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """[(H, W), ...] from "WxH,WxH" (width first, as people write 3840x2160)."""
    return [(int(h), int(w)) for w, h in (s.lower().split("x") for s in text.split(",") if s)]


class Budget:
    """Wall-clock guard: a step runs only if its estimate still fits; skipped steps are listed."""

    def __init__(self, seconds: float):
        self.start, self.seconds, self.skipped = time.perf_counter(), seconds, []

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def allows(self, what: str, estimate_s: float = 0.0) -> bool:
        if self.elapsed() + estimate_s <= self.seconds:
            return True
        self.skipped.append({"what": what, "reason": f"budget: {self.elapsed():.0f} s spent + ~{estimate_s:.0f} s "
                                                     f"estimated > --budget-s {self.seconds:g}"})
        return False


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, device: torch.device) -> tuple[float, object]:
    """(seconds, result) of fn(): CUDA events on a GPU, the host clock (after sync) elsewhere."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        result = fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3, result
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def timed_stage(fn, device: torch.device, repeats: int, weights: int, peaks: dict, tflop: float, mode: str) -> dict:
    """Median seconds of `repeats` calls (already warm), peak memory and achieved TFLOP/s."""
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
    times = [time_call(fn, device)[0] for _ in range(repeats)]
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:  # tensors allocated on top of the weights, from the profiler's allocation events
        peak = weights + memory_plan.measure_cpu_peak_bytes(fn)[0]
    median = statistics.median(times)
    rate = tflop / median if median > 0 and tflop > 0 else None
    share = lambda key: round(rate / peaks[key], 4) if rate and peaks.get(key) else None  # noqa: E731
    out = {"seconds_median": round(median, 5), "seconds_all": [round(t, 5) for t in times], "tflop": _sig(tflop),
           "tflops_achieved": rate and _sig(rate), "utilisation": share("bf16_tflops"),
           "peak_memory_bytes": int(peak), "peak_memory_gb": round(peak / 1e9, 3)}
    if mode == "fp8":  # the transformer's matmuls run in FP8; the VAE stays bf16
        out["utilisation_fp8_peak"] = share("fp8_tflops")
    return out


def _sig(x: float, digits: int = 5) -> float:
    return float(f"{x:.{digits}g}")


def device_info(device: torch.device) -> dict:
    """Name, memory and datasheet peaks of the device (peaks null where the name is not in the table)."""
    if device.type != "cuda":
        return {"type": device.type, "name": platform.processor() or platform.machine(),
                "threads": torch.get_num_threads(), "bf16_tflops": None, "fp8_tflops": None, "peak_source": None}
    props = torch.cuda.get_device_properties(device)
    info = {"type": "cuda", "name": props.name, "capability": list(torch.cuda.get_device_capability(device)),
            "total_memory_gb": round(props.total_memory / 1e9, 2), "multiprocessors": props.multi_processor_count,
            "bf16_tflops": None, "fp8_tflops": None, "peak_source": "not in DEVICE_PEAKS"}
    for key, bf16, fp8 in DEVICE_PEAKS:
        if re.search(rf"\b{re.escape(key)}\b", props.name):
            info.update(bf16_tflops=bf16, fp8_tflops=fp8, peak_source=f"datasheet dense peak, matched '{key}'")
            break
    info["matmul_ceiling_tflops"] = matmul_ceiling(device)
    return info


def matmul_ceiling(device: torch.device, n: int = 8192) -> float:
    """Measured bf16 TFLOP/s of an n^3 matrix product on random data (the achievable ceiling)."""
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    times = [time_call(lambda: a @ b, device)[0] for _ in range(10)]
    return round(2 * n**3 / statistics.median(times) / 1e12, 1)


def versions() -> dict:
    import diffusers

    out = {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
           "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None}
    try:
        import torchao

        out["torchao"] = torchao.__version__
    except ImportError:
        out["torchao"] = None
    return out


def stage_tflop(meta_vae, preset: str, size: tuple[int, int], token_px: int) -> dict:
    """{stage: TFLOP} at an output size: the VAE counted on a meta copy, the transformer by formula."""
    from torch.utils.flop_counter import FlopCounterMode

    hp, wp = (-(-n // token_px) * token_px for n in size)
    x = torch.empty(1, 3, hp, wp, device="meta")
    with torch.inference_mode(), FlopCounterMode(display=False) as enc:
        z = meta_vae.encode(x).latent_dist.mode()
    with torch.inference_mode(), FlopCounterMode(display=False) as dec:
        meta_vae.decode(z)
    out = {"vae_encode": enc.get_total_flops() / 1e12, "transformer": estimate_tflop(*size, preset),
           "vae_decode": dec.get_total_flops() / 1e12}
    return out | {"end_to_end": sum(out.values())}


def make_input(size: tuple[int, int], scale: int, device: torch.device, seed: int) -> torch.Tensor:
    """A seeded smooth-plus-detail LR image (1, 3, H/scale, W/scale) in [0, 1], the same on any device."""
    g = torch.Generator().manual_seed(seed)
    h, w = size[0] // scale, size[1] // scale
    base = bicubic_resize(torch.rand(1, 3, max(2, h // 8), max(2, w // 8), generator=g), (h, w))
    return (base + 0.05 * torch.rand(1, 3, h, w, generator=g)).clamp(0, 1).to(device)


def weights_bytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))


def measure_size(model: OP4KSR, size: tuple[int, int], mode: str, ctx: dict) -> dict:
    """One output size: warm-up, then each stage and the whole upscale timed; the output kept on the host."""
    args, device = ctx["args"], model.device
    x_lr = make_input(size, int(model.scale), device, args.seed)
    with torch.inference_mode():
        first_s, out = time_call(lambda: model.upscale(x_lr, size), device)  # compiles / autotunes
        out = out.float().cpu()  # off the device: it would count in every stage's peak
        x_pad = pad_to_multiple(bicubic_resize(x_lr, size), model.token_period_px)[0]
        if args.channels_last:
            x_pad = x_pad.contiguous(memory_format=torch.channels_last)
        z_lr = model.encode(x_pad)
        z_sr = z_lr - model.timestep * model.velocity(z_lr)
        fns = {"vae_encode": lambda: model.encode(x_pad), "transformer": lambda: model.velocity(z_lr),
               "vae_decode": lambda: model.decode(z_sr), "end_to_end": lambda: model.upscale(x_lr, size)}
        tflop = stage_tflop(ctx["meta_vae"], args.preset, size, model.token_period_px)
        weights = weights_bytes(model)
        stages = {name: timed_stage(fn, device, args.repeats, weights, ctx["device"], tflop[name], mode)
                  for name, fn in fns.items()}
        variants = (decode_variants(model, z_sr, ctx, weights, tflop["vae_decode"], mode)
                    if mode == ctx["args"].base_mode and ctx["variants_at"] == size else None)
    plan = memory_plan.MemoryPlan(args.preset, mode, partitions=model.decode_partitions)
    record = {"mode": mode, "size": f"{size[1]}x{size[0]}", "height": size[0], "width": size[1],
              "megapixels": round(size[0] * size[1] / 1e6, 2),
              "image_tokens": estimate_tokens(size, model.token_period_px), "first_call_seconds": round(first_s, 3),
              "weights_bytes": weights, "decode_partitions": model.decode_partitions,
              "attention": ctx["settings"]["attention"], "output_finite": bool(torch.isfinite(out).all()),
              "stages": stages}
    if device.type == "cuda":  # the plan models a GPU (cuDNN workspaces, the caching allocator)
        record["memory_plan_estimate_gb"] = round(plan.peak_bytes(*size) / 1e9, 3)
    if variants:
        record["vae_decode_variants"] = variants
    ctx["outputs"][(mode, size)] = out
    return record


def estimate_tokens(size: tuple[int, int], token_px: int) -> int:
    return -(-size[0] // token_px) * -(-size[1] // token_px)


def decode_variants(model: OP4KSR, z: torch.Tensor, ctx: dict, weights: int, tflop: float, mode: str) -> dict:
    """VAE decode with the other memory layout and with the last stage in 4 strips (memory plan data)."""
    args, device, out = ctx["args"], model.device, {}
    layout = torch.channels_last if args.channels_last else torch.contiguous_format
    other = torch.contiguous_format if args.channels_last else torch.channels_last

    def variant(name: str, memory_format, partitions: int) -> None:
        model.vae.to(memory_format=memory_format)
        model.decode_partitions = partitions
        zz = z.contiguous(memory_format=memory_format)
        try:
            model.decode(zz)  # warm: cuDNN picks algorithms for this layout
            out[name] = timed_stage(lambda: model.decode(zz), device, args.repeats, weights, ctx["device"], tflop, mode)
        except Exception as error:  # e.g. out of memory: the variant says so, the size's record stands
            out[name] = {"error": f"{type(error).__name__}: {error}"[:300]}
            if device.type == "cuda":
                torch.cuda.empty_cache()
        finally:
            model.vae.to(memory_format=layout)
            model.decode_partitions = 0

    variant("channels_last" if other is torch.channels_last else "contiguous", other, 0)
    variant("partitioned_4", layout, 4)
    return out


def measure_patch_based(model: OP4KSR, size: tuple[int, int], ctx: dict) -> dict:
    """Patch-based against patch-free at one size: seconds, peak memory and seam scores."""
    args, device = ctx["args"], model.device
    scale = int(model.scale)
    plan = tile_plan(size, scale, args.tile, args.tile_overlap)
    x_lr = make_input(size, scale, device, args.seed)
    run = lambda: upscale_tiled(model, x_lr, size, plan["tile_lr"], plan["overlap_lr"])  # noqa: E731
    first_s, tiled = time_call(run, device)
    stats = timed_stage(run, device, args.repeats, weights_bytes(model), ctx["device"], 0.0, args.base_mode)
    free = ctx["outputs"].get((args.base_mode, size))
    free_row = next((r for r in ctx["report"]["results"]
                     if r["mode"] == args.base_mode and (r["height"], r["width"]) == size), None)
    timing = {k: stats[k] for k in ("seconds_median", "seconds_all", "peak_memory_bytes", "peak_memory_gb")}
    record = {"size": f"{size[1]}x{size[0]}", "tile_px": args.tile, "overlap_px": args.tile_overlap, **plan,
              "first_call_seconds": round(first_s, 3),
              "patch_based": timing | {"seam_score": seam_score(tiled, plan["period_px"])}}
    if free is not None and free_row:
        record["patch_free"] = {"seconds_median": free_row["stages"]["end_to_end"]["seconds_median"],
                                "peak_memory_gb": free_row["stages"]["end_to_end"]["peak_memory_gb"],
                                "seam_score": seam_score(free.to(device), plan["period_px"])}
        record["patch_based_over_patch_free_seconds"] = round(
            stats["seconds_median"] / max(free_row["stages"]["end_to_end"]["seconds_median"], 1e-9), 3)
    return record


def run_sizes(model: OP4KSR, mode: str, sizes: list, ctx: dict, budget: Budget) -> None:
    """Measure each size in `mode`, skipping what the budget cannot hold; rewrites the JSON each time.

    A size's cost is estimated from the previous size's steady part (its wall time less the
    warm-up call, which holds the compile), scaled by TFLOP, plus the first size's warm-up if
    this size may compile (the first size of a mode)."""
    last = None  # (steady seconds, TFLOP) of the previous size measured in this mode
    for size in sizes:
        tflop = estimate_tflop(*size, ctx["args"].preset)
        estimate = last[0] * tflop / max(last[1], 1e-9) if last else ctx["estimates"].get((size, mode), 0.0)
        if not budget.allows(f"{mode} {size[1]}x{size[0]}", estimate):
            continue
        t0, n_results = time.perf_counter(), len(ctx["report"]["results"])
        for attempt in range(2):
            try:
                ctx["report"]["results"].append(measure_size(model, size, mode, ctx))
                break
            except torch.cuda.OutOfMemoryError as error:
                record_error(ctx, f"{mode} {size[1]}x{size[0]}", error)
                torch.cuda.empty_cache()
                break
            except Exception as error:  # a compile failure falls back (fullgraph -> graph breaks -> eager) once
                record_error(ctx, f"{mode} {size[1]}x{size[0]}", error)
                if attempt or not fall_back_from_compile(model, ctx):
                    break
        wall = time.perf_counter() - t0
        if len(ctx["report"]["results"]) > n_results:
            row = ctx["report"]["results"][-1]
            steady = wall - row["first_call_seconds"] + row["stages"]["end_to_end"]["seconds_median"]
            last = (steady, tflop)
            # an fp8 size costs about what this one did; the first one also compiles again
            ctx["estimates"][(size, "fp8")] = steady + (row["first_call_seconds"] if size == sizes[0] else 0.0)
        write_report(ctx)


def record_error(ctx: dict, what: str, error: BaseException) -> None:
    ctx["report"]["errors"].append({"what": what, "error": f"{type(error).__name__}: {error}"[:500]})


def fall_back_from_compile(model: OP4KSR, ctx: dict) -> bool:
    """After a failure in compiled blocks: recompile allowing graph breaks, or run eagerly; False if
    nothing was compiled (the failure is not the compiler's)."""
    settings = ctx["settings"]
    if not settings["compiled_blocks"]:
        return False
    speed.uncompile_blocks(model.transformer)
    if settings["compile_fullgraph"]:
        settings["compile_fullgraph"] = False
        settings["compiled_blocks"] = speed.compile_blocks(model.transformer, dynamic=ctx["args"].compile_dynamic,
                                                           mode=ctx["compile_mode"], fullgraph=False)
    else:
        settings["compile"], settings["compiled_blocks"] = False, 0
    return True


def run_fp8(model: OP4KSR, sizes: list, ctx: dict, budget: Budget) -> None:
    """Convert the transformer to FP8 in place and measure it, with its PSNR against the base mode's outputs."""
    args, report = ctx["args"], ctx["report"]
    reason = speed.fp8_unavailable_reason(model.device)
    if reason:
        report["fp8"] = {"status": f"unavailable: {reason}"}
        return
    if not budget.allows("fp8 conversion", 0.0):
        report["fp8"] = {"status": "skipped: budget"}
        return
    speed.uncompile_blocks(model.transformer)
    import torch._dynamo

    torch._dynamo.reset()  # drop compiled code (and what it holds of the bf16 blocks)
    t0 = time.perf_counter()
    try:
        conversion = speed.quantize_fp8(model.transformer, args.fp8_backend)
    except Exception as error:  # torchao present but refusing this model/device: say so, keep the bf16 data
        report["fp8"] = {"status": f"unavailable: {type(error).__name__}: {error}"[:300]}
        return
    if model.device.type == "cuda":
        torch.cuda.empty_cache()
    report["fp8"] = {"status": "ok", **conversion, "convert_seconds": round(time.perf_counter() - t0, 2),
                     "weights_bytes": weights_bytes(model)}
    if ctx["settings"]["compiled_blocks"]:
        ctx["settings"]["compiled_blocks"] = speed.compile_blocks(
            model.transformer, dynamic=args.compile_dynamic, mode=ctx["compile_mode"],
            fullgraph=ctx["settings"]["compile_fullgraph"])
    run_sizes(model, "fp8", sizes, ctx, budget)
    base = args.base_mode
    report["fp8"][f"psnr_vs_{base}_db"] = {
        f"{s[1]}x{s[0]}": round(float(psnr(ctx["outputs"][("fp8", s)], ctx["outputs"][(base, s)])[0]), 2)
        for s in sizes if ("fp8", s) in ctx["outputs"] and (base, s) in ctx["outputs"]}


def targets(report: dict) -> dict:
    """Issue 8's targets at 4096x4096 with the measured value and whether it is met (null: not measured)."""
    out = {}
    for mode, (seconds, gb) in TARGETS.items():
        row = next((r for r in report["results"] if r["mode"] == mode and r["size"] == "4096x4096"), None)
        e2e = row["stages"]["end_to_end"] if row else None
        out[mode] = {"seconds_max": seconds, "peak_gb_max": gb,
                     "seconds": e2e and e2e["seconds_median"], "peak_gb": e2e and e2e["peak_memory_gb"],
                     "met": e2e and bool(e2e["seconds_median"] <= seconds and e2e["peak_memory_gb"] <= gb)}
    return out


def summary(report: dict) -> str:
    """A short table of the run for the end of the log (the JSON holds everything)."""
    settings = report["settings"]
    lines = [f"{report['device']['name']} | torch {report['versions']['torch']} | attention {settings['attention']}"
             f" | compiled blocks {settings['compiled_blocks']}",
             f"{'mode':5} {'size':>10} {'encode':>8} {'transf.':>8} {'decode':>8} {'e2e s':>8} {'peak GB':>8} "
             f"{'TFLOP/s':>8} {'util':>6}"]
    for r in report["results"]:
        st = r["stages"]
        e2e = st["end_to_end"]
        seconds = " ".join(f"{st[k]['seconds_median']:8.4f}" for k in STAGES)
        lines.append(f"{r['mode']:5} {r['size']:>10} {seconds} {e2e['peak_memory_gb']:8.2f} "
                     f"{e2e['tflops_achieved'] or 0:8.1f} {e2e['utilisation'] or 0:6.1%}")
    for p in report["patch_based"]:
        free = p.get("patch_free", {})
        lines.append(f"patch-based {p['size']}: {p['tiles']} tiles, {p['patch_based']['seconds_median']:.3f} s "
                     f"({p.get('patch_based_over_patch_free_seconds')}x patch-free); seam score "
                     f"{p['patch_based']['seam_score']:.3f} vs {free.get('seam_score', float('nan')):.3f} patch-free")
    fp8 = report["fp8"]
    psnr_key = next((k for k in fp8 if k.startswith("psnr_vs_")), None)
    lines.append(f"fp8: {fp8['status']}" + (f" ({fp8['backend']}); {psnr_key}: {fp8[psnr_key]}" if psnr_key else ""))
    lines.append("targets: " + "; ".join(f"{m} {t['seconds']} s / {t['peak_gb']} GB -> met={t['met']}"
                                         for m, t in report["targets"].items()))
    lines += [f"skipped: {s['what']} ({s['reason']})" for s in report["budget"]["skipped"]]
    lines += [f"error: {e['what']}: {e['error'][:200]}" for e in report["errors"]]
    return "\n".join(lines)


def write_report(ctx: dict) -> None:
    report = ctx["report"]
    report["budget"] = {"budget_s": ctx["budget"].seconds, "elapsed_s": round(ctx["budget"].elapsed(), 1),
                        "skipped": ctx["budget"].skipped}
    report["targets"] = targets(report)
    if ctx["args"].json_out:
        ctx["args"].json_out.parent.mkdir(parents=True, exist_ok=True)
        ctx["args"].json_out.write_text(json.dumps(report, indent=2) + "\n")


def setup(args, budget: Budget) -> tuple[OP4KSR, dict]:
    """The model on the device with the speed switches applied, and the run's shared context."""
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = device.type == "cuda"  # the VAE's convolutions: pick the fastest algorithm
    t0 = time.perf_counter()
    model = OP4KSR.from_preset(args.preset, seed=args.seed, dtype=BASE_MODES[args.base_mode], device=device)
    sync(device)
    build_s = time.perf_counter() - t0
    if args.channels_last:
        speed.vae_channels_last(model.vae)
    sizes = parse_sizes(args.sizes)
    with torch.inference_mode():
        z = model.encode(pad_to_multiple(make_input(sizes[0], 1, device, args.seed), model.token_period_px)[0])

        def probe() -> float:
            model.velocity(z)
            return statistics.median(time_call(lambda: model.velocity(z), device)[0] for _ in range(3))

        backend, trials = speed.pick_attention_backend(
            model.transformer, speed.attention_candidates(device, args.attention), probe)
    compile_mode = "reduce-overhead" if args.cuda_graphs else None
    compiled = (speed.compile_blocks(model.transformer, dynamic=args.compile_dynamic, mode=compile_mode)
                if args.compile else 0)
    preset = get_preset(args.preset)
    with torch.device("meta"):
        from op4ksr.vae import F16AutoencoderKL

        meta_vae = F16AutoencoderKL(**preset.vae.config())
    settings = {"dtype": str(BASE_MODES[args.base_mode]).removeprefix("torch."),
                "attention_requested": args.attention, "attention": backend, "attention_trials_seconds": trials,
                "compile": bool(args.compile), "compiled_blocks": compiled, "compile_fullgraph": bool(args.compile),
                "compile_dynamic": args.compile_dynamic, "channels_last_vae": args.channels_last,
                "cudnn_benchmark": torch.backends.cudnn.benchmark, "decode_partitions": model.decode_partitions,
                "cuda_graphs": {"enabled": args.cuda_graphs, "note": (
                    "compile mode reduce-overhead per block (experimental)" if args.cuda_graphs else
                    "off: an eager 4K forward is ~2e3 kernel launches (fewer compiled), ~10 ms at ~5 us each, "
                    "against >= 0.5 s of GPU work: <= 2%; not measured")}}
    report = {"bench": "gpu_4k", "preset": args.preset, "command": " ".join(["bench/gpu_4k.py"] + args.argv),
              "device": device_info(device), "versions": versions(), "settings": settings,
              "build_seconds": round(build_s, 2), "weights_bytes": weights_bytes(model), "results": [],
              "patch_based": [], "fp8": {"status": "not run"}, "errors": [],
              "memory_plan": memory_plan.plan_table(args.preset),
              "note": "random weights: speed and memory are the real model's; PSNR and seam scores describe "
                      "this random model, not trained weights"}
    largest = max(sizes, key=lambda s: s[0] * s[1])
    named = {"largest": [largest], "none": []}
    patch = named[args.patch_sizes] if args.patch_sizes in named else parse_sizes(args.patch_sizes)
    ctx = {"args": args, "device": report["device"], "settings": settings, "meta_vae": meta_vae, "outputs": {},
           "estimates": {}, "report": report, "budget": budget, "compile_mode": compile_mode, "patch_sizes": patch,
           "variants_at": largest if args.vae_variants else None}
    return model, ctx


def main(argv=None) -> dict:
    args = parse_args(argv)
    budget = Budget(args.budget_s)
    model, ctx = setup(args, budget)
    sizes = parse_sizes(args.sizes)
    run_sizes(model, args.base_mode, sizes, ctx, budget)
    for size in ctx["patch_sizes"]:
        what = f"patch-based {size[1]}x{size[0]}"
        if budget.allows(what, ctx["estimates"].get((size, "fp8"), 0.0) * 1.5):
            try:
                ctx["report"]["patch_based"].append(measure_patch_based(model, size, ctx))
            except Exception as error:  # e.g. out of memory: keep the run going to FP8
                record_error(ctx, what, error)
            write_report(ctx)
    if args.fp8:
        run_fp8(model, sizes, ctx, budget)
    write_report(ctx)
    print(json.dumps(ctx["report"], indent=2))
    print(summary(ctx["report"]), file=sys.stderr)
    return ctx["report"]


if __name__ == "__main__":
    main()
