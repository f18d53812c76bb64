"""The driver's side of a video file on a fleet run: cuts, chunks of work, and the parts muxed when all are done.

A video's frames are rows, as a sequence's are: one manifest row per frame (pipeline/manifest/frames.py),
`key` the video's key under input.uri and `frame` its 0-based index in presentation order, the
numbering op4ksr.video.video_parts.cut_scores gives. On the driver each video is fetched to a
scratch folder once, decoded once for its cut scores (interlaced video is refused in one line:
the fleet does not deinterlace), and its shots split by chunk_shot; the cut list is saved at
runs/<id>/cuts/<video>.json. The plan keeps every frame's pts, and a chunk's work item carries its
frames' pts, so the worker seeks to the chunk instead of decoding the video from its start
(op4ksr.video.seek). A chunk is one work item; its actor writes its outputs as one lossless
part (FFV1 Matroska) at runs/<id>/parts/<video>/f<first>-<end>.mkv and a row per frame whose
`output_key` is that part. When every frame of a video has a `done` row (in this run or earlier
ones), the driver fetches the parts and muxes them in frame order into videos/<video key stem>.mkv.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from op4ksr.provenance.manifest import SIDECAR_SUFFIX
from op4ksr.video.decode import VIDEO_EXTENSIONS
from op4ksr.video.encode import check_encoder
from op4ksr.video.errors import VideoInputError
from op4ksr.video.settings import VideoSettings
from op4ksr.video.video_parts import assemble_video, cut_scores, part_outputs
from pipeline.listing.read_only import without_prefixes
from pipeline.manifest.frames import read_frame_rows
from pipeline.manifest.layout import RUNS, run_key
from pipeline.run.film_plan import FRAMES_DIR, shot_chunks
from pipeline.storage import ObjectNotFoundError, safe_key

VIDEOS = "videos/"  # the output videos, under output.uri
PART_NAME = re.compile(r"/f(\d+)-(\d+)\.mkv$")  # a part's first frame and end, in its key


@dataclass
class VideoPlan:
    key: str  # under input.uri
    local: Path  # the driver's scratch copy
    frames: int  # decoded frames: the rows the video needs
    size: tuple[int, int]  # output (H, W)
    bit_depth: int
    cuts: list[int]
    scores: list[float]
    pts: list[int]  # every frame's presentation timestamp, in the stream's time base: what workers seek by
    chunks: list[list[tuple[int, int, int, int]]]  # per shot: (start, end, owned_from, chunk number)
    decode_error: str | None

    def cut_list(self) -> dict:
        return {"video": self.key, "frames": self.frames, "cuts": self.cuts,
                "cut_scores": [round(s, 4) for s in self.scores], "decode_error": self.decode_error,
                "shots": [[shot[0][0], shot[-1][1] - 1] for shot in self.chunks],
                "chunks": [[[s, e - 1] for s, e, _, _ in shot] for shot in self.chunks]}


def list_videos(inputs, exclude: tuple[str, ...] = ()) -> list[str]:
    """Keys of the video files under `inputs`, leaving out keys under `exclude`."""
    return sorted(o.key for o in without_prefixes(inputs.iter_objects(VIDEO_EXTENSIONS), exclude))


def output_video_key(key: str) -> str:
    """videos/<the input's key, its extension .mkv>: Matroska holds the FFV1 default and any copied stream."""
    return VIDEOS + safe_key(str(PurePosixPath(key).with_suffix(".mkv")))


def part_key(run_id: str, video: str, owned_from: int, end: int) -> str:
    return run_key(run_id, f"parts/{safe_key(video)}/f{owned_from:06d}-{end:06d}.mkv")


def plan_video(inputs, key: str, scratch: Path, settings: VideoSettings, plan_size) -> VideoPlan:
    """Fetch the video to `scratch`, find its cuts and chunk its shots (as film_plan.plan_sequence does)."""
    local = scratch / safe_key(key)
    local.parent.mkdir(parents=True, exist_ok=True)
    inputs.get_file(key, str(local))
    info, scores, pts, decode_error = cut_scores(local)
    cuts = scores.cuts(settings.cut_threshold)
    return VideoPlan(key, local, len(scores.scores), tuple(plan_size(info.height, info.width)), info.bit_depth,
                     cuts, scores.scores, pts, shot_chunks(cuts, len(scores.scores), settings), decode_error)


def done_video_frames(outputs, model_id: str, params: str) -> dict[tuple[str, int], str]:
    """(video key, frame index) -> the part holding its output, of every frame some run's rows record as
    done by this model with these parameters (a sequence's rows come along, keyed by frame file)."""
    runs = outputs.spec.child(RUNS).open()
    try:
        parts = [o.key for o in runs.iter_objects([".parquet"]) if f"/{FRAMES_DIR}" in o.key]
    except (FileNotFoundError, ObjectNotFoundError):
        return {}
    return {(r["key"], r["frame"]): r["output_key"] for key in parts for r in read_frame_rows(runs.get(key))
            if r["status"] == "done" and r["model_id"] == model_id and r["params_hash"] == params}


def video_items(plan: VideoPlan, run_id: str, done: dict) -> list[dict]:
    """The chunks of `plan` with a frame that has no `done` row, as work items (film_plan.work_items' fields
    where they mean the same: `frames` are indices, `keys` the video's key once per frame)."""
    items = []
    for shot_number, shot in enumerate(plan.chunks):
        for start, end, owned_from, chunk in shot:
            flags = [(plan.key, i) in done for i in range(start, end)]
            if all(flags[owned_from - start:]):
                continue
            items.append({"kind": "video", "sequence": plan.key, "sequence_id": safe_key(plan.key),
                          "shot": shot_number, "chunk": chunk, "keys": [plan.key] * (end - start),
                          "frames": list(range(start, end)), "pts": plan.pts[start:end], "lead_in": owned_from - start, "done": flags,
                          "part": part_key(run_id, plan.key, owned_from, end), "bit_depth": plan.bit_depth,
                          "height": plan.size[0], "width": plan.size[1]})
    return items


def plan_videos(inputs, outputs, run_id: str, keys: list[str], scratch: Path, settings: VideoSettings,
                plan_size, done: dict) -> tuple[list[VideoPlan], list[dict], list[str]]:
    """(plans, work items, one line per refused video); each plan's cut list saved. VideoInputError (one
    line) before any decoding if this FFmpeg cannot encode video.codec."""
    if keys:
        check_encoder(settings.codec)
    plans, items, problems = [], [], []
    for key in keys:
        try:
            plan = plan_video(inputs, key, scratch, settings, plan_size)
        except VideoInputError as err:  # one bad video: one line, the others go on
            problems.append(str(err))
            continue
        outputs.put(run_key(run_id, f"cuts/{safe_key(key)}.json"), json.dumps(plan.cut_list(), indent=1).encode(),
                    "application/json")
        plans.append(plan)
        items += video_items(plan, run_id, done)
    return plans, items, problems


def finish_video(outputs, plan: VideoPlan, done: dict, filled: dict, scratch: Path, codec: str,
                 provenance: dict, signer=None, embed: bool = True) -> dict:
    """Mux the video's parts into its output when every frame has an output: a done row's, or this run's
    failed row's (the part holds its bicubic fill, named in `filled_from_bicubic`, redone by the next run
    which then muxes again); what the summary says of it. With a `signer` (a ManifestSigner) the output
    carries a C2PA manifest: Matroska, the fleet's container, in the sidecar <output>.c2pa stored beside it
    first (the video's presence says it is finished)."""
    sources = {**filled, **done}  # (video key, frame) -> the part holding its output; a done row wins
    missing = sum((plan.key, i) not in sources for i in range(plan.frames))
    status = {"video": plan.key, "frames": plan.frames, "missing": missing, "output": None,
              "filled_from_bicubic": [i for i in range(plan.frames) if (plan.key, i) in filled
                                      and (plan.key, i) not in done]}
    if missing:
        return status
    target = scratch / "out" / output_video_key(plan.key)
    report = assemble_video(plan.local, target, _outputs(outputs, plan, sources, scratch), plan.frames,
                            plan.size, codec, provenance, signer, embed)
    sidecar = Path(f"{target}{SIDECAR_SUFFIX}")
    if sidecar.is_file():
        outputs.put_file(output_video_key(plan.key) + SIDECAR_SUFFIX, str(sidecar), "application/c2pa")
        sidecar.unlink()
    outputs.put_file(output_video_key(plan.key), str(target), "video/x-matroska")
    target.unlink()
    return {**status, "output": output_video_key(plan.key), "streams_not_copied": report["streams_not_copied"],
            "c2pa": report["c2pa"], "c2pa_manifest": report.get("c2pa_manifest")}


def _outputs(outputs, plan: VideoPlan, done: dict, scratch: Path):
    """Every frame's output in frame order, read from the parts its row names (each fetched once per run
    of consecutive frames it holds)."""
    current, frames, position = None, iter(()), 0
    for index in range(plan.frames):
        key = done[(plan.key, index)]
        first = int(PART_NAME.search(key).group(1))
        if key != current or index - first != position:
            local = scratch / "parts" / safe_key(key)
            local.parent.mkdir(parents=True, exist_ok=True)
            outputs.get_file(key, str(local))
            current, frames, position = key, part_outputs(local, plan.bit_depth), 0
            for _ in range(index - first):  # a frame done in another part before: skip to this one's
                next(frames)
                position += 1
        yield next(frames)
        position += 1
