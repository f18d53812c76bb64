"""A FLUX.1-dev-size forward on a CPU with model.offload=blocks, bf16 and int8; prints one JSON object.

Writes a flux-dev-size checkpoint with seeded random weights in the layout `op4ksr import` writes
(transformer/ one bf16 safetensors file, vae/ the F16 VAE in bf16, prompt_embeds.safetensors,
model_index.json with the weights' sha256; about 24 GB), tensor by tensor and block by block so
it is never held in memory, then the int8 copy through the importer's own writer (`op4ksr import
--weights int8`'s copy_component). Each measurement runs in a fresh child process, so its peak
RSS (ru_maxrss) is its own, with an RSS sampler that records the peak of each stage.

The weights are random: the timings, memory and bytes read are those of the real model's shapes;
the pictures are structured noise, and int8's error against bf16 is that of random weights
(no outlier channels like trained weights have).

usage: nice -n 19 python bench/full_size_cpu.py --root /tmp/op4ksr-fullsize --sides 512,1024 \\
           --json-out bench-full-size.json          (add --tiny for a seconds-long check of the script)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a bare checkout

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from full_size_checkpoint import write_int8_copy, write_random_checkpoint  # noqa: E402


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def io_bytes() -> dict:
    """This process's read_bytes (from storage) and rchar (read() calls, page cache included)."""
    with open("/proc/self/io") as f:
        fields = dict(line.split(": ") for line in f.read().splitlines())
    return {"read_bytes": int(fields["read_bytes"]), "rchar": int(fields["rchar"])}


class StagePeaks:
    """Samples RSS every few ms and keeps the peak of the stage that is labelled current."""

    def __init__(self, every_s: float = 0.005):
        self.every_s, self.stage, self.peaks, self.stop = every_s, "idle", {}, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            rss = rss_bytes()
            self.peaks[self.stage] = max(self.peaks.get(self.stage, 0), rss)
            time.sleep(self.every_s)

    def label(self, stage: str) -> None:
        rss = rss_bytes()
        self.peaks[self.stage] = max(self.peaks.get(self.stage, 0), rss)
        self.stage = stage

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def run_one(checkpoint: Path, weights: str, side: int, threads: int) -> dict:
    """One upscale to side x side (input side/4) with offload=blocks; its time, memory, bytes and checks."""
    from op4ksr.imageops import bicubic_resize, psnr
    from op4ksr.inference import memory_plan
    from op4ksr.loading import InferenceOptions, ModelSpec, checkpoint_reader, load_model
    from op4ksr.offload import streamer_of

    torch.set_num_threads(threads)
    base_rss, io0 = rss_bytes(), io_bytes()
    spec = ModelSpec(source=str(checkpoint), dtype="bfloat16", device="cpu", weights=weights, offload="blocks",
                     options=InferenceOptions(fidelity="backproject", fidelity_iterations=10))
    with StagePeaks() as peaks:
        peaks.label("load")
        t0 = time.perf_counter()
        model = load_model(spec)
        load_s, loaded_rss, io1 = time.perf_counter() - t0, rss_bytes(), io_bytes()
        g = torch.Generator().manual_seed(side)
        lr = bicubic_resize(torch.rand(1, 3, side // 32, side // 32, generator=g), (side // 4, side // 4))
        lr = (lr + 0.05 * torch.rand(lr.shape, generator=g)).clamp(0, 1)
        model.transformer.register_forward_pre_hook(lambda *a: peaks.label("transformer"))
        model.transformer.register_forward_hook(lambda *a: peaks.label("vae_decode_and_fidelity"))
        peaks.label("vae_encode")
        t1 = time.perf_counter()
        out = model.upscale(lr, (side, side))
        upscale_s = time.perf_counter() - t1
        peaks.label("done")
    io2 = io_bytes()
    plan = memory_plan.checkpoint_plan(checkpoint_reader(spec), "int8" if weights == "int8" else "bfloat16",
                                       offload="blocks")
    predicted = plan.cpu_stage_bytes(side, side)
    streamer = streamer_of(model.transformer)
    stage_peaks = {k: v for k, v in peaks.peaks.items() if k not in ("idle", "done")}
    measured = {"vae_encode": stage_peaks["vae_encode"] - loaded_rss,
                "transformer": stage_peaks["transformer"] - loaded_rss - streamer.peak_live_bytes,
                "vae_decode": stage_peaks["vae_decode_and_fidelity"] - loaded_rss}
    weights_term = {"vae_encode": plan.resident_weights_bytes(), "transformer": plan.weights_bytes(),
                    "vae_decode": plan.resident_weights_bytes()}
    compare = {s: {"plan_activation_bytes": int(predicted[s] - weights_term[s]), "measured_activation_bytes": measured[s],
                   "measured_over_plan": round(measured[s] / (predicted[s] - weights_term[s]), 3)} for s in measured}
    return {
        "weights": weights, "offload": "blocks", "side": side, "input": list(lr.shape[-2:]), "threads": threads,
        "load_seconds": round(load_s, 2), "upscale_seconds": round(upscale_s, 2),
        "block_visits": streamer.visits,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "baseline_rss_bytes": base_rss, "loaded_rss_bytes": loaded_rss,
        "stage_peak_rss_bytes": stage_peaks, "streamed_peak_live_bytes": streamer.peak_live_bytes,
        # measured activations: a stage's peak RSS less the RSS after loading (and, in the transformer,
        # less the block bytes the streamer held at most); the plan's: its stage bytes less its weights term
        "activations_plan_vs_measured": compare,
        "peak_rss_over_baseline_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base_rss,
        "disk": {"load_read_bytes": io1["read_bytes"] - io0["read_bytes"],
                 "upscale_read_bytes": io2["read_bytes"] - io1["read_bytes"],
                 "upscale_rchar": io2["rchar"] - io1["rchar"]},
        "plan": {"source": plan.source, "resident_weights_bytes": plan.resident_weights_bytes(),
                 "streamed_blocks_bytes": plan.streamed_bytes(), "stage_bytes": predicted,
                 "peak_bytes": max(predicted.values())},
        "output": {"shape": list(out.shape), "finite": bool(torch.isfinite(out).all()),
                   "lr_consistency_db": round(float(psnr(bicubic_resize(out, tuple(lr.shape[-2:])), lr)), 2)},
    }


def velocity_error(checkpoint: Path, int8_checkpoint: Path, side: int, threads: int) -> dict:
    """Relative error ||v_int8 - v_bf16|| / ||v_bf16|| of the transformer's output on one latent."""
    from op4ksr.loading import ModelSpec, load_model

    torch.set_num_threads(threads)
    out = {}
    for name, path, weights in (("bf16", checkpoint, "dtype"), ("int8", int8_checkpoint, "int8")):
        model = load_model(ModelSpec(source=str(path), dtype="bfloat16", device="cpu", weights=weights,
                                     offload="blocks"))
        g = torch.Generator().manual_seed(7)
        z = torch.randn(1, model.vae.config.latent_channels, side // 16, side // 16, generator=g).to(torch.bfloat16)
        with torch.inference_mode():
            out[name] = model.velocity(z).float()
        del model
    diff = (out["int8"] - out["bf16"]).norm() / out["bf16"].norm()
    return {"side": side, "relative_error": float(f"{float(diff):.4g}"),
            "finite": bool(torch.isfinite(out["int8"]).all() and torch.isfinite(out["bf16"]).all())}


def rope_4096(checkpoint: Path) -> dict:
    """The RoPE tables of a 4096x4096 output (16,384 image + 512 prompt tokens) with RFR, timed."""
    from op4ksr.model import image_ids
    from op4ksr.rope import RFRPosEmbed, rfr_axis_thetas

    cfg = json.loads((checkpoint / "transformer" / "config.json").read_text())
    out = {}
    for mode, scale in (("none", 1.0), ("base", 4.0), ("ntk", 4.0)):
        embed = RFRPosEmbed(rfr_axis_thetas(cfg["rope_theta"], tuple(cfg["axes_dims_rope"]), mode, scale),
                            tuple(cfg["axes_dims_rope"]))
        ids = torch.cat([torch.zeros(512, 3), image_ids(128, 128)])
        t0 = time.perf_counter()
        cos, sin = embed(ids)
        out[f"{mode}_{scale:g}"] = {"seconds": round(time.perf_counter() - t0, 3), "shape": list(cos.shape),
                                    "bytes": cos.numel() * cos.element_size() * 2,
                                    "finite": bool(torch.isfinite(cos).all() and torch.isfinite(sin).all()),
                                    "max_abs_cos2_plus_sin2_minus_1": float((cos**2 + sin**2 - 1).abs().max())}
    return out


def vae_4096(checkpoint: Path, threads: int, partitions: int) -> dict:
    """The F16 VAE alone at 4096x4096 in bf16: encode, then decode (in `partitions` strips), timed, peak RSS."""
    from op4ksr.checkpoint import load_component
    from op4ksr.vae import F16AutoencoderKL

    torch.set_num_threads(threads)
    vae = load_component(F16AutoencoderKL, checkpoint / "vae", "cpu", torch.bfloat16)
    x = torch.rand(1, 3, 4096, 4096, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16) * 2 - 1
    with StagePeaks() as peaks, torch.inference_mode():
        peaks.label("encode")
        t0 = time.perf_counter()
        z = vae.encode(x).latent_dist.mode()
        t1 = time.perf_counter()
        del x
        peaks.label("decode")
        y = vae.decode_partitioned(z, partitions) if partitions > 1 else vae.decode(z).sample
        t2 = time.perf_counter()
        peaks.label("done")
    return {"latent_shape": list(z.shape), "output_shape": list(y.shape), "finite": bool(torch.isfinite(y).all()),
            "decode_partitions": partitions, "encode_seconds": round(t1 - t0, 1), "decode_seconds": round(t2 - t1, 1),
            "stage_peak_rss_bytes": {k: v for k, v in peaks.peaks.items() if k in ("encode", "decode")},
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def child(args: list[str], timeout_s: float) -> dict:
    """Run this script's --child mode in a fresh process; its JSON, or the error."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(args)]
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:g} s", "args": args}
    if done.returncode != 0:
        return {"error": done.stderr[-2000:], "args": args}
    return json.loads(done.stdout) | {"wall_seconds": round(time.perf_counter() - t0, 1)}


def machine() -> dict:
    import diffusers

    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) * 1024
    name = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    return {"cpu": name, "cpus": os.cpu_count(), "memory_bytes": mem, "python": platform.python_version(),
            "torch": torch.__version__, "diffusers": diffusers.__version__}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", type=Path, default=Path("/tmp/op4ksr-fullsize"), help="checkpoints are written here")
    p.add_argument("--preset", default="flux-dev", choices=("flux-dev", "tiny"))
    p.add_argument("--sides", default="512,1024", help="square output sides, smallest first")
    p.add_argument("--weights", default="dtype,int8", help="model.weights modes to run")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--velocity-side", type=int, default=512, help="int8 vs bf16 transformer error here (0: skip)")
    p.add_argument("--vae-4096", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--vae-partitions", type=int, default=4)
    p.add_argument("--timeout-s", type=float, default=3600, help="per child process")
    p.add_argument("--json-out", type=Path)
    p.add_argument("--child", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def run_child(spec: list) -> dict:
    kind, *rest = spec
    if kind == "upscale":
        return run_one(Path(rest[0]), rest[1], int(rest[2]), int(rest[3]))
    if kind == "velocity":
        return velocity_error(Path(rest[0]), Path(rest[1]), int(rest[2]), int(rest[3]))
    if kind == "vae":
        return vae_4096(Path(rest[0]), int(rest[1]), int(rest[2]))
    raise ValueError(kind)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(run_child(json.loads(args.child))))
        return {}
    bf16, int8 = args.root / f"{args.preset}-bf16", args.root / f"{args.preset}-int8"
    report = {"bench": "full_size_cpu", "preset": args.preset, "command": " ".join(["bench/full_size_cpu.py"] + (argv or sys.argv[1:])),
              "machine": machine(), "checkpoint": {}, "runs": [], "errors": [],
              "note": "random weights (seeded, nn.Linear's initialisation): time, memory and bytes read are the "
                      "real model's shapes'; the outputs are structured noise, and int8's error is random weights'"}

    def write() -> None:
        if args.json_out:
            args.json_out.write_text(json.dumps(report, indent=2) + "\n")

    needed = [(bf16, lambda: write_random_checkpoint(bf16, args.preset))]
    if "int8" in args.weights.split(",") or args.velocity_side:
        needed.append((int8, lambda: write_int8_copy(bf16, int8)))
    for path, make in needed:
        t0 = time.perf_counter()
        if not (path / "model_index.json").is_file():
            make()
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        report["checkpoint"][path.name] = {"bytes_on_disk": size, "seconds_to_write": round(time.perf_counter() - t0, 1)}
        write()
    report["rope_4096"] = rope_4096(bf16)
    for side in (int(s) for s in args.sides.split(",") if s and int(s) > 0):
        for weights in args.weights.split(","):
            ckpt = int8 if weights == "int8" else bf16
            result = child(["upscale", str(ckpt), weights, side, args.threads], args.timeout_s)
            (report["errors"] if "error" in result else report["runs"]).append(result)
            write()
    if args.velocity_side:
        report["int8_velocity_error"] = child(["velocity", str(bf16), str(int8), args.velocity_side, args.threads],
                                              args.timeout_s)
        write()
    if args.vae_4096:
        report["vae_4096"] = child(["vae", str(bf16), args.threads, args.vae_partitions], args.timeout_s)
        write()
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
