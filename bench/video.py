"""Video through `op4ksr video`'s library (op4ksr.video.remaster) against a bare loop; prints JSON.

usage:
  python bench/video.py speed --frames 8 --size 60x80 --scale 2                        # tiny model, CPU
  python bench/video.py speed --frames 12 --size 240x320 --scale 4 --upscaler bicubic  # the overhead alone
  python bench/video.py memory --frames 1000,3000                                       # peak RSS

speed: one synthetic clip (a texture panning 1 px a frame, a cut half-way, FFV1 in Matroska) is
upscaled by the shipped tiny-trained model (or by bicubic, to see the shot bookkeeping and the
flow alone), in this order:
  - bare: decode -> model -> FFV1 encode, nothing else (the floor);
  - cuts: the first pass alone (decode + thumbnails + cut scores);
  - remaster (measure_flow=false): both passes, luma flicker only;
  - remaster (measure_flow=true): + DIS flow and the warping error on every frame pair;
  - remaster (temporal=flow): + the flow-guided fusion.
Each row gives wall seconds and this process's CPU seconds (user + system: steadier than wall
time on a shared machine) per frame; compare rows of one run only.
memory: a clip of N frames through remaster_video with a bicubic "upscaler" (the bookkeeping:
decode, cuts, measures, encode, the report) in a fresh child process each; its peak RSS.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def write_clip(path: Path, frames: int, size: tuple[int, int]) -> None:
    """A panning texture with a cut at frames // 2, FFV1 in Matroska (lossless: no codec noise)."""
    import av

    rng = np.random.default_rng(0)
    h, w = size
    scenes = [rng.random((h, w + frames, 3)).astype(np.float32) for _ in range(2)]
    scenes = [torch.nn.functional.avg_pool2d(torch.from_numpy(s).permute(2, 0, 1)[None], 5, 1, 2)[0] for s in scenes]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("ffv1", rate=24)
        stream.width, stream.height, stream.pix_fmt = w, h, "bgr0"
        for t in range(frames):
            scene = scenes[0] if t < frames // 2 else scenes[1]
            rgb = (scene[:, :, t:t + w].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = t
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def bare_loop(source: Path, target: Path, upscale, scale: int) -> int:
    from op4ksr.video import decode
    from op4ksr.video.encode import VideoWriter

    info = decode.probe(source)
    size = (info.height * scale, info.width * scale)
    with decode.av_module().open(str(source)) as container:
        writer = VideoWriter(target, info, container, size)
        for frame in decode.decode_video(info):
            writer.write(upscale(frame.rgb, size), frame.pts)
        writer.close()
    return writer.frames_written


def speed(args) -> dict:
    from op4ksr.loading import ModelSpec, load_model
    from op4ksr.presets import DEFAULT_MODEL
    from op4ksr.video import decode
    from op4ksr.video.remaster import VideoSettings, remaster_video
    from op4ksr.video.shots import find_cuts, luma_thumbnail

    from op4ksr.imageops import bicubic_resize

    torch.set_num_threads(args.threads)
    if args.upscaler == "model":
        model = load_model(ModelSpec(source=DEFAULT_MODEL, device="cpu"))
        upscale = lambda rgb, size: model.upscale(rgb[None], size)[0].cpu()  # noqa: E731
    else:
        upscale = lambda rgb, size: bicubic_resize(rgb[None], size)[0]  # noqa: E731
    plan = lambda h, w: (h * args.scale, w * args.scale)  # noqa: E731
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "clip.mkv"
        write_clip(source, args.frames, args.size)
        start = _clocks()
        bare_loop(source, Path(tmp) / "bare.mkv", upscale, args.scale)
        rows["bare"] = _since(start)
        start = _clocks()
        thumbs = [luma_thumbnail(f.rgb) for f in decode.decode_video(decode.probe(source))]
        cuts, _ = find_cuts(thumbs, VideoSettings().cut_threshold)
        rows["cuts"] = _since(start)
        for name, settings in (("remaster measure_flow=false", VideoSettings(measure_flow=False)),
                               ("remaster measure_flow=true", VideoSettings()),
                               ("remaster temporal=flow", VideoSettings(temporal="flow"))):
            start = _clocks()
            report = remaster_video(source, Path(tmp) / f"{len(rows)}.mkv", upscale, plan, settings)
            rows[name] = _since(start)
    out = {name: {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "fps_wall": round(args.frames / wall, 3),
                  "cpu_ms_per_frame": round(1000 * cpu / args.frames, 1)} for name, (wall, cpu) in rows.items()}
    return {"frames": args.frames, "input": f"{args.size[1]}x{args.size[0]}",
            "output": f"{args.size[1] * args.scale}x{args.size[0] * args.scale}",
            "upscaler": DEFAULT_MODEL if args.upscaler == "model" else "bicubic", "threads": args.threads,
            "cuts_found": cuts, "report_cuts": report["cuts"], "rows": out}


def _clocks() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), usage.ru_utime + usage.ru_stime


def _since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = _clocks()
    return wall - start[0], cpu - start[1]


def memory_child(frames: int, size: tuple[int, int]) -> dict:
    from op4ksr.imageops import bicubic_resize
    from op4ksr.video.remaster import VideoSettings, remaster_video

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "clip.mkv"
        write_clip(source, frames, size)
        start = time.perf_counter()
        report = remaster_video(source, Path(tmp) / "o.mkv", lambda rgb, s: bicubic_resize(rgb[None], s)[0],
                                lambda h, w: (2 * h, 2 * w), VideoSettings(), profile=Path(tmp) / "p.png")
        seconds = time.perf_counter() - start
    return {"frames": report["frames"], "seconds": round(seconds, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "report_json_kb": round(len(json.dumps(report)) / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["speed", "memory", "memory-child"])
    parser.add_argument("--frames", default="24")
    parser.add_argument("--size", default="120x160", help="input HxW")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--upscaler", choices=["model", "bicubic"], default="model")
    args = parser.parse_args()
    args.size = tuple(int(v) for v in args.size.split("x"))
    import av
    import cv2

    versions = {"python": platform.python_version(), "torch": torch.__version__, "av": av.__version__,
                "opencv": cv2.__version__, "machine": platform.machine(), "cpus": os.cpu_count()}
    if args.mode == "speed":
        args.frames = int(args.frames)
        print(json.dumps({"speed": speed(args), "versions": versions}, indent=1))
    elif args.mode == "memory-child":
        print(json.dumps(memory_child(int(args.frames), args.size)))
    else:
        results = []
        for frames in args.frames.split(","):
            child = subprocess.run([sys.executable, __file__, "memory-child", "--frames", frames,
                                    "--size", "x".join(map(str, args.size))], capture_output=True, text=True, check=True)
            results.append(json.loads(child.stdout.strip().splitlines()[-1]))
        print(json.dumps({"memory": results, "size": args.size, "versions": versions}, indent=1))


if __name__ == "__main__":
    main()
