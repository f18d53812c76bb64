"""`op4ksr video`: upscale a video file or the frame sequences of a folder, shot by shot, on this machine."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jobs.common import (add_config_arguments, add_model_argument, config_from_args, model_from_config,
                         size_overrides)
from op4ksr.errors import UserError

DESCRIPTION = """\
Upscale a video file, or every frame sequence (name.<frame>.ext: DPX, TIFF, PNG) in a folder,
shot by shot, and write a per-shot report beside the output.

Beside each output: NAME.shots.json (the report), NAME.shots.png (one flicker and one warping-error
curve per shot, bicubic's dotted) and NAME.profile.png (the middle row of every output frame,
stacked over time: flicker shows as horizontal bands).

A video becomes a video: FFV1 in Matroska by default (lossless; video.codec picks another codec
this FFmpeg has, e.g. --codec prores_ks --out master.mov), with every frame's timestamp (to the
millisecond in Matroska, exactly in MOV/MP4), the colour tags, and the audio, subtitle and data
streams copied packet for packet. It says what made it: tags (and in Matroska an XMP
attachment); with provenance.cert_chain and provenance.private_key, a C2PA manifest too (inside
a MOV/MP4, in NAME.c2pa beside a Matroska file). A sequence becomes a sequence in the same
format and bit depth, with the same file names and frame numbers, under --out.

Cuts are found without a model (video.cut_threshold); each shot's report has its luma-flicker
curve and its warping error against the bicubic upscale's (docs/VIDEO.md says how they are
measured). A frame the model fails on is filled from the bicubic upscale and named in the
report; the exit status is then 1. Interlaced video is refused unless video.deinterlace=bwdif (or
yadif) deinterlaces it before the model, one frame per frame, times kept. A rerun of a
sequence does only the frames missing or failed in the output folder (--overwrite redoes all).

examples:
  op4ksr video reel.mov --out reel_4k.mkv --long-side 3840
  op4ksr video scans/reel1/ --out remaster/reel1/ --scale 2 --model tiny
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="op4ksr video", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", type=Path, metavar="IN", help="a video file, or a folder of frame sequences")
    add_config_arguments(parser)
    parser.add_argument("--out", required=True, type=Path, metavar="OUT",
                        help="output video file (.mkv by default), or folder for sequences")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--scale", type=float, help="output / input size (default sr.scale)")
    size.add_argument("--long-side", type=int, metavar="PX", help="output long side in pixels, e.g. 3840")
    add_model_argument(parser)
    parser.add_argument("--codec", help="video codec of the output (default video.codec: ffv1)")
    parser.add_argument("--ray", action="store_true",
                        help="frame sequences on a Ray actor pool, IN and OUT folders or s3:// prefixes: one manifest "
                             "row per frame, resume, cost per frame (op4ksr video --ray --help)")
    parser.add_argument("--overwrite", action="store_true",
                        help="redo outputs that exist (default: a sequence's written frames are kept and only the "
                             "missing or failed ones are done; an existing output video is kept, its input skipped)")
    return parser


def _overrides(args) -> list[str]:
    out = size_overrides(args)
    if args.codec:
        out.append(f"video.codec={args.codec}")
    return out


def main(argv: list[str]) -> int:
    if "--ray" in argv:  # frame sequences on a Ray pool; IN and OUT may be s3:// prefixes (not paths)
        from jobs import video_fleet

        return video_fleet.main(argv)
    args = build_parser().parse_intermixed_args(argv)
    cfg = config_from_args(args, _overrides(args))
    if not args.input.exists():
        raise UserError(f"no such file or folder: {args.input}")
    from jobs.specs import size_policy, video_settings

    settings, sizes = video_settings(cfg), size_policy(cfg)
    if args.input.is_dir():
        return _sequences(cfg, args, settings, sizes)
    from op4ksr.video.remaster import remaster_video

    target = args.out if args.out.suffix else args.out / f"{args.input.stem}.mkv"
    if target.resolve() == args.input.resolve():
        raise UserError(f"--out {target} is the input itself; name another file")
    if target.exists() and not args.overwrite:
        print(f"skipped: {target} exists; --overwrite replaces it", file=sys.stderr)
        return 0
    signer = _signer(cfg)  # before the model loads: an identity that cannot sign is one line, first
    upscale = _upscaler(cfg)
    report = remaster_video(args.input, target, upscale, sizes.plan, settings,
                            profile=Path(f"{target}.profile.png"), provenance=upscale.provenance, signer=signer,
                            embed=bool(cfg.provenance.embed))
    return _finish([report], [Path(f"{target}.shots.json")])


def _sequences(cfg, args, settings, sizes) -> int:
    from op4ksr.video.errors import FrameFileError, SequenceError
    from op4ksr.video.remaster import remaster_sequence
    from op4ksr.video.sequences import find_sequences

    if args.out.resolve().is_relative_to(args.input.resolve()):
        raise UserError(f"--out {args.out} is inside the input folder {args.input}: its frames would be read "
                        "as input on the next run; write outside it")
    sequences, problems = find_sequences(args.input)
    for line in problems:
        print(f"refused: {line}", file=sys.stderr)
    if not sequences:
        raise UserError(f"no usable frame sequence (name.<frame>.dpx|tif|png) in {args.input}")
    upscale, reports, paths = _upscaler(cfg), [], []
    for sequence in sequences:
        out_dir = args.out / sequence.directory.relative_to(args.input)
        try:
            reports.append(remaster_sequence(sequence, out_dir, upscale, sizes.plan, settings,
                                             resume=not args.overwrite,
                                             profile=out_dir / f"{sequence.name}.profile.png",
                                             provenance=upscale.provenance))
            paths.append(out_dir / f"{sequence.name}.shots.json")
        except (SequenceError, FrameFileError) as err:  # one bad sequence: one line, the others go on
            problems.append(str(err))
            print(f"refused: {err}", file=sys.stderr)
    return _finish(reports, paths) or (1 if problems else 0)


class _ModelUpscaler:
    """The model as a frame upscaler: (3, h, w), (H, W) -> (3, H, W) on the CPU; its provenance for the outputs."""

    def __init__(self, cfg):
        import op4ksr

        self.model = model_from_config(cfg)
        self.provenance = {"version": op4ksr.__version__, "model_id": self.model.model_id}

    def __call__(self, rgb, size):
        return self.model.upscale(rgb[None], size)[0].cpu()


def _signer(cfg):
    """A ManifestSigner for provenance.cert_chain/private_key, or None when they are not set."""
    from jobs.specs import signing_spec

    spec = signing_spec(cfg)
    if spec is None:
        return None
    from op4ksr.provenance.manifest import ManifestSigner

    return ManifestSigner(spec.load())


def _upscaler(cfg) -> _ModelUpscaler:
    return _ModelUpscaler(cfg)


def _source_problems(report: dict) -> list[str]:
    """One line each for a video that stopped decoding half-way, a stream the output cannot carry, and
    frames damaged in the source."""
    lines = [f"failed: {report['decode_error']}"] if report.get("decode_error") else []
    lines += [f"not copied: {report['source']}: {line}" for line in report.get("streams_not_copied") or []]
    corrupt = report.get("corrupt_source_frames") or []
    if corrupt:
        lines.append(f"damaged: {report['source']}: the decoder concealed damage in {len(corrupt)} frame(s) "
                     f"(first {corrupt[0]}); they are named in the report's corrupt_source_frames")
    return lines


def _notes(report: dict) -> list[str]:
    """One line each for what was done to the source before the model: deinterlaced, EXR values clipped."""
    lines = []
    if report.get("deinterlace"):
        done = report["deinterlace"]
        lines.append(f"deinterlaced: {report['source']}: {done['filter']}, field order {done['field_order']} "
                     f"({done['because']})")
    if (report.get("exr") or {}).get("samples_clipped"):
        exr = report["exr"]
        lines.append(f"clipped: {report['source']}: {exr['samples_clipped']} EXR samples outside 0..1 were clipped "
                     f"before the model (video.exr_transfer={exr['transfer']})")
    return lines


def _finish(reports: list[dict], paths: list[Path]) -> int:
    """Write each report and its curves (a PNG beside it) and print one line per output; 1 if any frame failed."""
    from op4ksr.video.charts import plot_shots

    failed = 0
    for report, path in zip(reports, paths):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1))
        plot_shots(report, path.with_suffix(".png"))
        failed += report["frames_failed"]
        flagged = sum(len(s["flicker_flagged"]) for s in report["shots"])
        resumed = f", {report['frames_resumed']} kept from an earlier run" if report.get("frames_resumed") else ""
        timing = report["timing"]
        per_minute = (f", {timing['seconds_per_footage_minute']:.0f} s per minute of footage"
                      if "seconds_per_footage_minute" in timing else "")
        print(f"{report['output']}: {report['frames']} frames, {len(report['shots'])} shots{resumed}, "
              f"{report['frames_failed']} failed (filled from bicubic), {flagged} flicker-flagged; "
              f"{timing['seconds_per_frame']:.2f} s per frame{per_minute}; report {path}", file=sys.stderr)
        for line in _notes(report):
            print(line, file=sys.stderr)
        for line in _source_problems(report):
            print(line, file=sys.stderr)
            failed += 1
    return 1 if failed else 0
