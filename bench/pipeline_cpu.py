"""Whole-pipeline throughput vs a bare loop, host CPU per 4K output, driver memory; prints JSON.

Three measurements, each in its own child process so peaks are its own:
  throughput  N images through `run_backfill` (embedded S3, local Ray, tiny model) against the
              same stage code called in a plain in-process loop (done check, fetch, decode, model,
              quality report, encode, upload of image and report), no Ray;
  stages      host CPU-seconds per 4096x4096 output for decode, encode (each format), upload;
  driver      the driver's peak RSS for a run of 100 and of 1000 images.
usage: python bench/pipeline_cpu.py [--images 200] [--input-side 64] [--driver-sizes 100,1000] [--skip stages]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np
from PIL import Image

INPUT_SIDE = 64  # --input-side; 64x64 in -> 256x256 out: ~0.1 s of work per image, the worst case for overheads


# the actor's torch threads: as many as the bare loop's torch uses (Ray's default would be 1)
TORCH_THREADS = os.cpu_count()


def _png(seed: int, side: int | None = None) -> bytes:
    side = side or INPUT_SIDE
    rng = np.random.default_rng(seed)
    base = rng.random((side // 8, side // 8, 3))
    img = Image.fromarray((base * 255).astype(np.uint8)).resize((side, side), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def _setup(server, count: int, bucket_suffix: str, *overrides: str):
    """(config, input store) for `count` PNG inputs in a new bucket; `overrides` win over the bench's own."""
    from jobs.config import load_config

    bucket = f"bench-{bucket_suffix}"
    server.create_bucket(bucket)
    store = server.open_storage(f"s3://{bucket}/in/")
    for i in range(count):
        store.put(f"img-{i:06d}.png", _png(i))
    cfg = load_config([], [f"input.uri=s3://{bucket}/in/", f"output.uri=s3://{bucket}/out/",
                           f"storage.endpoint_url={server.endpoint_url}", "pipeline.ray_num_cpus=4",
                           "actors.batch_size=4", f"actors.torch_threads={TORCH_THREADS}", *overrides])
    return cfg, store


def throughput(count: int) -> dict:
    import ray
    from omegaconf import OmegaConf

    from actors.upscaler import UpscaleActor

    from pipeline.run.backfill import run_backfill
    from pipeline.storage.embedded_s3 import EmbeddedS3
    from jobs.specs import build_run_spec

    with EmbeddedS3() as server:
        cfg, _ = _setup(server, count, "throughput")
        spec = build_run_spec(cfg, "bench", "", credentials=server.credentials)
        start = time.perf_counter()
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
        ray_start_s = time.perf_counter() - start
        first_output: list[tuple[float, int]] = []  # (time, images done) when the first batch arrives

        def on_progress(progress) -> None:
            if not first_output:
                first_output.append((time.perf_counter(), progress.done))

        start = time.perf_counter()
        summary = run_backfill(spec, UpscaleActor, on_progress)
        end = time.perf_counter()
        ray.shutdown()
        loop_cfg = OmegaConf.merge(cfg, {"output": {"uri": cfg.output.uri.replace("/out/", "/loop/")}})
        loop = _bare_loop(build_run_spec(loop_cfg, "loop", "", credentials=server.credentials), count)
    pipeline_s = end - start
    # steady state: after the actor is warm and the first batch is out
    t_first, done_first = first_output[0]
    steady = (count - done_first) / (end - t_first) if end > t_first else None
    loop_rate = count / loop["seconds"]
    return {"images": count, "ok": summary.ok, "ray_start_seconds": round(ray_start_s, 2),
            "pipeline_seconds": round(pipeline_s, 2), "pipeline_images_per_s": round(count / pipeline_s, 3),
            "pipeline_steady_images_per_s": round(steady, 3) if steady else None,
            "bare_loop_ok": loop["ok"], "bare_loop_seconds": round(loop["seconds"], 2),
            "bare_loop_model_load_seconds": round(loop["load_seconds"], 2),
            "bare_loop_images_per_s": round(loop_rate, 3),
            "ratio_end_to_end": round(loop["seconds"] / pipeline_s, 3),
            "ratio_steady_state": round(steady / loop_rate, 3) if steady else None}


def _bare_loop(spec, count: int) -> dict:
    """The pipeline's own stage code (done check, fetch, decode, model, quality report, encode,
    upload of image and report) called in a plain loop in this process: no Ray, no tasks, no
    object store, one batch at a time. Timed from model load to the last upload, as the pipeline
    is timed from its start to its last row."""
    import pyarrow as pa

    from actors.upscaler import UpscaleActor
    from pipeline.run.dataflow import fetch_stage

    fetch = fetch_stage(spec, threads=1)
    keys = [f"img-{i:06d}.png" for i in range(count)]
    etags = {obj.key: obj.etag for obj in spec.input.open().iter_objects()}
    start = time.perf_counter()
    actor = UpscaleActor(spec.model, spec.actor)
    load_seconds = time.perf_counter() - start
    ok = 0
    for i in range(0, count, spec.pool.batch_size):
        block = pa.table({"key": keys[i:i + spec.pool.batch_size], "etag": [etags[k] for k in keys[i:i + spec.pool.batch_size]]})
        records = actor(fetch(block)).to_pylist()
        ok += sum(r["status"] == "ok" for r in records)
    return {"seconds": time.perf_counter() - start, "load_seconds": load_seconds, "ok": ok}


def stages() -> dict:
    """Host CPU-seconds per 4096x4096 output: decode a 1024x1024 input, encode by format, upload."""
    import torch

    from op4ksr.images.codec import decode_image, encode_image
    from pipeline.storage.embedded_s3 import EmbeddedS3

    torch.manual_seed(0)
    source = decode_image(_png(0, 1024))
    output = torch.nn.functional.interpolate(source.rgb[None], size=(4096, 4096), mode="bilinear")[0]

    def cpu(fn) -> tuple[float, object]:
        start = time.process_time()
        value = fn()
        return time.process_time() - start, value

    result = {"decode_1024_input": round(cpu(lambda: decode_image(_png(0, 1024)))[0], 3), "encode": {}}
    encoded = {}
    for name, fmt, kwargs in [("png_level1", "png", {"png_compress_level": 1}), ("png_level6", "png", {"png_compress_level": 6}),
                              ("jpeg_q95", "jpeg", {"quality": 95}), ("webp_q95", "webp", {"quality": 95}),
                              ("tiff_deflate", "tiff", {})]:
        seconds, data = cpu(lambda: encode_image(output, source, fmt, **kwargs))
        result["encode"][name] = {"cpu_seconds": round(seconds, 3), "megabytes": round(len(data) / 1e6, 2)}
        encoded[name] = data
    with EmbeddedS3() as server:
        server.create_bucket("bench-upload")
        store = server.open_storage("s3://bench-upload/x/")
        result["upload_png_level1_client_cpu_seconds"] = round(cpu(lambda: store.put("a.png", encoded["png_level1"]))[0], 3)
    return result


def driver_memory(count: int) -> dict:
    import ray

    from actors.upscaler import UpscaleActor

    from pipeline.run.backfill import run_backfill
    from pipeline.storage.embedded_s3 import EmbeddedS3
    from jobs.specs import build_run_spec

    with EmbeddedS3() as server:
        cfg, _ = _setup(server, count, f"driver-{count}")
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
        summary = run_backfill(build_run_spec(cfg, "bench", "", credentials=server.credentials), UpscaleActor)
        ray.shutdown()
    return {"images": count, "ok": summary.ok,
            "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def _child(kind: str, arg: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", kind, str(arg), "--input-side", str(INPUT_SIDE)],
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{kind} {arg} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    global INPUT_SIDE
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--driver-sizes", default="100,1000")
    parser.add_argument("--skip", default="", help="comma list of throughput,stages,driver")
    parser.add_argument("--input-side", type=int, default=INPUT_SIDE, help="input images are N x N (output 4N x 4N)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    INPUT_SIDE = args.input_side
    if args.child:
        kind, arg = args.child[0], int(args.child[1])
        print(json.dumps({"throughput": throughput, "stages": lambda _: stages(), "driver": driver_memory}[kind](arg)))
        return
    import ray
    import torch

    skip = set(filter(None, args.skip.split(",")))
    report = {"bench": "pipeline_cpu", "machine": f"{platform.machine()} {os.cpu_count()} cores",
              "torch": torch.__version__, "ray": ray.__version__, "preset": "tiny", "torch_threads": TORCH_THREADS,
              "input": f"{INPUT_SIDE}x{INPUT_SIDE} png", "output": f"{4 * INPUT_SIDE}x{4 * INPUT_SIDE} png"}
    if "throughput" not in skip:
        report["throughput"] = _child("throughput", args.images)
    if "stages" not in skip:
        report["host_cpu_per_4096_output"] = _child("stages", 0)
    if "driver" not in skip:
        report["driver_memory"] = [_child("driver", n) for n in map(int, args.driver_sizes.split(","))]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
