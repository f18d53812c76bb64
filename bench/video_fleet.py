"""Frame sequences through `op4ksr video` (local) and `op4ksr video --ray` against a bare loop; prints JSON.

usage (the tiny model on CPU; docs/PERFORMANCE.md, *Video*):
  python bench/video_fleet.py speed --frames 8 --size 480x854 --long-side 1920
  python bench/video_fleet.py speed --frames 3 --size 1080x1920 --long-side 3840 --rows bare,local,local-fusion,ray
  python bench/video_fleet.py memory --frames 1000,10000 --ray-frames 1000

speed: one PNG sequence (a texture panning 1 px a frame, a cut half-way), the same model object
in this process for the first rows:
  - bare: read_frame -> model.upscale -> write_frame, nothing else (the floor);
  - local: op4ksr.video.remaster.remaster_sequence (what `op4ksr video FOLDER` runs): the cut
    pass, shots, the flicker measure, video.measure_flow=false;
  - local-flow: the same with video.measure_flow=true (DIS flow and the warping error);
  - local-fusion: video.temporal=flow (the fusion, on the measure's flow);
  - ray: `op4ksr video IN --out OUT --ray` in a child process on a local Ray (2 CPUs, one actor,
    video.measure_flow=false); its fixed cost (Ray's start, the actor's model load) is taken from
    the same command on a 2-frame 24x32 sequence and subtracted for its per-frame figure.
Rows give wall seconds, the process's CPU seconds (not for ray: its work is in other processes),
frames per second and the per-frame overhead over bare (wall).
memory: sequences of N tiny PNG frames (24x32 -> 48x64); peak RSS of a fresh process running
remaster_sequence (bicubic in the model's place: the bookkeeping alone), of the --ray driver
planning them (--dry-run: listing, cut pass, chunks, no Ray), and of the --ray driver over a
whole run of --ray-frames frames (the tiny model), sampled from /proc while it runs.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

SPEED_ROWS = ("bare", "local", "local-flow", "local-fusion", "ray")
RAY_KEYS = ("pipeline.ray_num_cpus=2", "actors.min=1", "actors.max=1")


def write_sequence(folder: Path, frames: int, size: tuple[int, int]) -> None:
    """`folder/reel.0001.png`...: a smooth texture panning 1 px a frame, a second one from frames // 2 (a cut)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    h, w = size
    rng = np.random.default_rng(0)
    coarse = [rng.random((h // 4 + 2, (w + frames) // 4 + 2, 3)) for _ in range(2)]  # upsampled: smooth, cheap
    scenes = [np.kron(c, np.ones((4, 4, 1)))[:h, :w + frames] for c in coarse]
    for t in range(frames):
        scene = scenes[0] if t < frames // 2 else scenes[1]
        Image.fromarray((scene[:, t:t + w] * 255).astype(np.uint8)).save(folder / f"reel.{t + 1:04d}.png",
                                                                        compress_level=1)


def _clocks() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), usage.ru_utime + usage.ru_stime


def _since(start: tuple[float, float]) -> dict:
    wall, cpu = _clocks()
    return {"wall_s": round(wall - start[0], 2), "cpu_s": round(cpu - start[1], 2)}


def bare_loop(folder: Path, out: Path, model, size: tuple[int, int]) -> None:
    from op4ksr.video.frames import read_frame, write_frame

    for path in sorted(folder.glob("*.png")):
        frame = read_frame(path)
        write_frame(out / path.name, model.upscale(frame.rgb[None], size)[0].float().cpu(), frame)


def local_run(folder: Path, out: Path, upscale, plan, **settings) -> dict:
    from op4ksr.video.remaster import VideoSettings, remaster_sequence
    from op4ksr.video.sequences import find_sequences

    (sequence,), _ = find_sequences(folder)
    return remaster_sequence(sequence, out, upscale, plan, VideoSettings(**settings), resume=False)


def ray_command(folder: Path, out: Path, model: str, size_args: list[str], threads: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "jobs.cli", "video", str(folder), "--out", str(out), "--ray", "--model", model,
            *size_args, *RAY_KEYS, f"actors.torch_threads={threads}", "run.id=bench", *extra]


def run_sampled(cmd: list[str]) -> dict:
    """Run `cmd` (a child process), sampling its RSS from /proc every 0.2 s; wall seconds, peak and last RSS."""
    start = time.perf_counter()
    child = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak, samples = 0, []
    while child.poll() is None:
        try:
            status = Path(f"/proc/{child.pid}/status").read_text()
        except OSError:
            break
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if "VmHWM" in fields:
            peak = max(peak, int(fields["VmHWM"].split()[0]))
            samples.append(int(fields["VmRSS"].split()[0]))
        time.sleep(0.2)
    stdout, stderr = child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {child.returncode}: {stderr[-2000:]}")
    return {"wall_s": round(time.perf_counter() - start, 2), "peak_rss_mb": round(peak / 1024, 1),
            "rss_mb_samples": len(samples), "rss_mb_at_half": round(samples[len(samples) // 2] / 1024, 1) if samples
            else None, "rss_mb_last": round(samples[-1] / 1024, 1) if samples else None, "stdout": stdout}


def ray_summary(out: Path) -> dict:
    summary = json.loads((out / "runs" / "bench" / "summary.json").read_text())
    return {k: summary[k] for k in ("frames", "chunks", "done", "failed", "seconds")}


def speed(args) -> dict:
    from op4ksr.loading import ModelSpec, load_model
    from op4ksr.sizing import output_size
    from PIL import Image

    torch.set_num_threads(args.threads)
    model = load_model(ModelSpec(source=args.model, device="cpu"))
    size = output_size(*args.size, long_side=args.long_side)
    plan = lambda h, w: output_size(h, w, long_side=args.long_side)  # noqa: E731
    upscale = lambda rgb, s: model.upscale(rgb[None], s)[0].float().cpu()  # noqa: E731
    upscale(torch.rand(3, 32, 32), (64, 64))  # first-call set-up out of the first row
    settings = {"local": {"measure_flow": False}, "local-flow": {"measure_flow": True},
                "local-fusion": {"measure_flow": True, "temporal": "flow"}}
    rows, reports = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        write_sequence(folder, args.frames, args.size)
        for name in args.rows:
            out = Path(tmp) / name
            if name == "bare":
                start = _clocks()
                bare_loop(folder, out, model, size)
                rows[name] = _since(start)
            elif name == "ray":
                rows[name] = ray_row(Path(tmp), folder, out, args)
            else:
                start = _clocks()
                report = local_run(folder, out, upscale, plan, **settings[name])
                rows[name] = _since(start)
                reports[name] = {"cuts": report["cuts"], "shots": len(report["shots"])}
            with Image.open(next(out.rglob("reel.0001.png"))) as written:
                rows[name]["output"] = f"{written.width}x{written.height}"
    for row in rows.values():
        wall = row.get("per_run_wall_s", row["wall_s"])
        row["fps"] = round(args.frames / wall, 4)
        row["wall_ms_per_frame"] = round(1000 * wall / args.frames)
        if "cpu_s" in row:  # steadier than wall time on a shared machine; not for ray (other processes)
            row["cpu_ms_per_frame"] = round(1000 * row["cpu_s"] / args.frames)
        if "bare" in rows:
            row["overhead_ms_per_frame"] = row["wall_ms_per_frame"] - rows["bare"]["wall_ms_per_frame"]
            if "cpu_s" in row:
                row["cpu_overhead_ms_per_frame"] = row["cpu_ms_per_frame"] - rows["bare"]["cpu_ms_per_frame"]
    return {"frames": args.frames, "input": f"{args.size[1]}x{args.size[0]}", "long_side": args.long_side,
            "output": f"{size[1]}x{size[0]}", "model": args.model, "torch_threads": args.threads,
            "cut_at_frame": args.frames // 2, "reports": reports, "rows": rows}


def ray_row(tmp: Path, folder: Path, out: Path, args) -> dict:
    """The --ray command's wall time, less its fixed cost measured on a 2-frame 24x32 sequence."""
    size_args = ["--long-side", str(args.long_side)]
    write_sequence(tmp / "fixed-in", 2, (24, 32))
    fixed = run_sampled(ray_command(tmp / "fixed-in", tmp / "fixed-out", args.model, ["--scale", "2"], args.threads))
    run = run_sampled(ray_command(folder, out, args.model, size_args, args.threads, "video.measure_flow=false"))
    return {"wall_s": run["wall_s"], "fixed_wall_s": fixed["wall_s"],
            "per_run_wall_s": round(run["wall_s"] - fixed["wall_s"], 2), "driver_peak_rss_mb": run["peak_rss_mb"],
            "summary": ray_summary(out)}


def memory(args) -> dict:
    counts = [int(n) for n in args.frames.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sorted(set(counts + ([args.ray_frames] if args.ray_frames else []))):
            write_sequence(Path(tmp) / f"in{n}", n, (24, 32))
        for n in counts:
            folder = Path(tmp) / f"in{n}"
            local = run_sampled([sys.executable, __file__, "memory-child", "--frames", str(n), "--folder", str(folder)])
            plan = run_sampled(ray_command(folder, Path(tmp) / f"plan{n}", args.model, ["--scale", "2"], args.threads,
                                           "--dry-run"))
            rows.append({"frames": n, "local": {**json.loads(local.pop("stdout")), **local},
                         "ray_plan": {k: v for k, v in plan.items() if k != "stdout"}})
        ray_run = None
        if args.ray_frames:
            out = Path(tmp) / "ray-out"
            ray_run = run_sampled(ray_command(Path(tmp) / f"in{args.ray_frames}", out, args.model, ["--scale", "2"],
                                              args.threads))
            ray_run.pop("stdout")
            ray_run["summary"] = ray_summary(out)
    return {"frame_size": "32x24 -> 64x48", "rows": rows, "ray_run": ray_run}


def memory_child(frames: int, folder: Path) -> dict:
    from op4ksr.imageops import bicubic_resize

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        report = local_run(folder, Path(tmp), lambda rgb, s: bicubic_resize(rgb[None], s)[0],
                           lambda h, w: (2 * h, 2 * w))
        seconds = time.perf_counter() - start
    assert report["frames"] == frames, report["frames"]
    return {"frames_reported": report["frames"], "seconds": round(seconds, 1),
            "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "report_json_kb": round(len(json.dumps(report)) / 1024, 1)}


def versions() -> dict:
    import av
    import cv2
    import ray

    return {"python": platform.python_version(), "torch": torch.__version__, "ray": ray.__version__,
            "av": av.__version__, "opencv": cv2.__version__, "machine": platform.machine(),
            "processor": platform.processor(), "cpus": os.cpu_count(), "load_avg": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["speed", "memory", "memory-child"])
    parser.add_argument("--frames", default="8", help="speed: frames; memory: comma-separated sequence lengths")
    parser.add_argument("--size", default="480x854", help="speed: input HxW")
    parser.add_argument("--long-side", type=int, default=1920, help="speed: output long side")
    parser.add_argument("--rows", default=",".join(SPEED_ROWS), help=f"speed: some of {','.join(SPEED_ROWS)}")
    parser.add_argument("--ray-frames", type=int, default=0, help="memory: frames of a whole --ray run (0: none)")
    parser.add_argument("--model", default="tiny", help="model.path (default: the tiny preset)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (here and in the Ray actor)")
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode == "memory-child":
        print(json.dumps(memory_child(int(args.frames), args.folder)))
        return
    started = time.perf_counter()
    if args.mode == "speed":
        args.frames, args.size, args.rows = int(args.frames), tuple(int(v) for v in args.size.split("x")), \
            args.rows.split(",")
        result = {"speed": speed(args)}
    else:
        result = {"memory": memory(args)}
    print(json.dumps({**result, "versions": versions(), "seconds": round(time.perf_counter() - started, 1),
                      "command": " ".join(sys.argv)}, indent=1))


if __name__ == "__main__":
    main()
