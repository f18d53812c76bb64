"""The driver's side of a frame-sequence run: sequences listed, cuts found, shots cut into chunks of work.

On the driver, one sequence after another: every frame is fetched once and reduced to a luma
thumbnail for the cut scores (op4ksr.video.shots; only the previous thumbnail is held), its size
and bit depth checked against the first frame's. The cut list is saved beside the run's manifest
(runs/<id>/cuts/<sequence>.json). Each shot is split by chunk_shot, so no chunk crosses a cut,
and a chunk is one work item: the frames a model actor runs in order. A chunk whose frames all
have a `done` row in an earlier run's manifest is not scheduled; the others carry, per frame,
whether it is done (its output is then read back, not upscaled or recorded again).
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from op4ksr.errors import UserError
from op4ksr.video.errors import FrameFileError, SequenceError
from op4ksr.video.frames import Frame, read_frame
from op4ksr.video.sequences import SEQUENCE_EXTENSIONS, FrameSequence, group_sequences
from op4ksr.video.settings import VideoSettings
from op4ksr.video.shots import CutScores, chunk_shot, luma_thumbnail, shots_from_cuts
from pipeline.manifest.frames import read_frame_rows
from pipeline.listing.read_only import without_prefixes
from pipeline.manifest.layout import IMAGES, RUNS, run_key
from pipeline.storage import ObjectNotFoundError, safe_key

FRAMES_DIR = "frames/"  # runs/<id>/frames/: the run's per-frame rows, one Parquet file per chunk


class NoSequences(UserError):
    """The input location holds no frame sequence."""


def read_stored_frame(storage, key: str, exr_transfer: str) -> Frame:
    """A frame file under `storage` decoded (op4ksr.video.frames), through a scratch copy of its bytes;
    `exr_transfer`: video.exr_transfer, how an EXR's linear values become the model's [0, 1]."""
    with tempfile.TemporaryDirectory(prefix="op4ksr-frame-") as scratch:
        path = Path(scratch) / PurePosixPath(key).name  # the name keeps the extension, which says the format
        storage.get_file(key, str(path))
        return read_frame(path, exr_transfer)


def sequence_id(sequence: FrameSequence) -> str:
    """`dir/name.ext`: the key-safe name of a sequence in the run's folders."""
    return str(sequence.directory / f"{sequence.name}{sequence.extension}")


def sequence_label(sequence: FrameSequence) -> str:
    """`dir/name.%04d.ext`, as film tools name it."""
    return str(sequence.directory / sequence.label)


def output_frame_key(input_key: str) -> str:
    """images/<the input frame's key>: same name, so the same format and frame number."""
    return IMAGES + safe_key(input_key)


def list_sequences(inputs, exclude: tuple[str, ...] = ()) -> tuple[list[FrameSequence], list[str]]:
    """The frame sequences under `inputs` (a Storage; keys as relative paths), leaving out keys under
    `exclude` (an output location inside the input's), and one line per refused one."""
    objects = without_prefixes(inputs.iter_objects(SEQUENCE_EXTENSIONS), exclude)
    return group_sequences(PurePosixPath(o.key) for o in objects)


@dataclass
class SequencePlan:
    sequence: FrameSequence
    size: tuple[int, int]  # output (H, W)
    cuts: list[int]  # indices of the frames that start a shot
    scores: list[float]
    chunks: list[list[tuple[int, int, int, int]]]  # per shot: (start, end, owned_from, chunk number) indices

    def cut_list(self) -> dict:
        numbers = [f.number for f in self.sequence.frames]
        return {"sequence": sequence_label(self.sequence), "frames": len(numbers), "first_frame": numbers[0],
                "cuts": [numbers[c] for c in self.cuts], "cut_scores": [round(s, 4) for s in self.scores],
                "shots": [[numbers[shot[0][0]], numbers[shot[-1][1] - 1]] for shot in self.chunks],
                "chunks": [[[numbers[s], numbers[e - 1]] for s, e, _, _ in shot] for shot in self.chunks]}


def plan_sequence(inputs, sequence: FrameSequence, settings: VideoSettings, plan_size) -> SequencePlan:
    """Cuts and chunks of one sequence; SequenceError/FrameFileError (one line) for a frame unlike the first
    or unreadable. With `flow`, a chunk after the first of a shot starts `chunk_overlap` frames early: those
    lead-in frames warm the chunk's fusion up and are written by the chunk before (no cross-fade on a fleet)."""
    scores, geometry = CutScores(), None
    for file in sequence.frames:
        frame = read_stored_frame(inputs, str(file.path), settings.exr_transfer)
        found = (*frame.rgb.shape[-2:], frame.bit_depth)
        if geometry is None:
            geometry = found
        elif found != geometry:
            what = "sizes" if found[:2] != geometry[:2] else "bit depths"
            raise SequenceError(f"sequence {sequence_label(sequence)}: mixed {what}: frame {sequence.first} is "
                                f"{geometry[1]}x{geometry[0]} {geometry[2]}-bit, frame {file.number} is {found[1]}x"
                                f"{found[0]} {found[2]}-bit; split the sequence or conform it")
        scores.add(luma_thumbnail(frame.rgb))
    cuts = scores.cuts(settings.cut_threshold)
    return SequencePlan(sequence, tuple(plan_size(geometry[0], geometry[1])), cuts, scores.scores,
                        shot_chunks(cuts, len(sequence.frames), settings))


def shot_chunks(cuts: list[int], frames: int, settings: VideoSettings) -> list[list[tuple[int, int, int, int]]]:
    """Per shot, its chunks as (start, end, owned_from, chunk number) frame indices: never across a cut. With
    `flow`, a chunk after the first of a shot starts `chunk_overlap` frames early (its lead-in, owned by
    the chunk before)."""
    overlap = settings.chunk_overlap if settings.temporal == "flow" else 0
    chunks = []
    for shot in shots_from_cuts(cuts, frames):
        parts = chunk_shot(shot, settings.chunk_frames, overlap)
        chunks.append([(c.start, c.end, parts[n - 1].end if n else c.start, n) for n, c in enumerate(parts)])
    return chunks


def done_frames(outputs, model_id: str, params: str) -> set[str]:
    """Input keys of the frames some run's manifest (runs/*/frames/) records as done by this model with
    these parameters."""
    runs = outputs.spec.child(RUNS).open()
    done = set()
    try:
        parts = [o.key for o in runs.iter_objects([".parquet"]) if f"/{FRAMES_DIR}" in o.key]
    except (FileNotFoundError, ObjectNotFoundError):
        return done
    for key in parts:
        done.update(r["key"] for r in read_frame_rows(runs.get(key)) if r["status"] == "done"
                    and r["model_id"] == model_id and r["params_hash"] == params)
    return done


def work_items(plan: SequencePlan, done: set[str]) -> list[dict]:
    """The chunks of `plan` with a frame that has no `done` row, as Ray Data rows."""
    files, items = plan.sequence.frames, []
    for shot_number, shot in enumerate(plan.chunks):
        for start, end, owned_from, chunk in shot:
            keys = [str(f.path) for f in files[start:end]]
            if all(k in done for k in keys[owned_from - start:]):
                continue
            items.append({"sequence": sequence_label(plan.sequence), "sequence_id": sequence_id(plan.sequence),
                          "shot": shot_number, "chunk": chunk, "keys": keys,
                          "outputs": [output_frame_key(k) for k in keys],
                          "frames": [f.number for f in files[start:end]], "lead_in": owned_from - start,
                          "done": [k in done for k in keys], "height": plan.size[0], "width": plan.size[1]})
    return items


def save_cut_list(outputs, run_id: str, plan: SequencePlan) -> str:
    key = run_key(run_id, f"cuts/{sequence_id(plan.sequence)}.json")
    outputs.put(key, json.dumps(plan.cut_list(), indent=1).encode(), "application/json")
    return key


def plan_run(inputs, outputs, run_id: str, settings: VideoSettings, plan_size, done: set[str],
             exclude: tuple[str, ...] = (), videos: int = 0) -> tuple[list[dict], list[str], int]:
    """(work items, one line per refused sequence, frames listed) of a run whose `done` frames (input keys)
    need no new row; each plan's cut list saved. NoSequences when there is nothing to plan: no
    sequence and none of the `videos` video files (pipeline/run/film_video_plan.py plans those)."""
    sequences, problems = list_sequences(inputs, exclude)
    if not sequences and not problems and not videos:
        raise NoSequences(f"input.uri={inputs.spec.uri}: no frame sequence (name.<frame>.dpx|tif|tiff|png) "
                          "and no video file (.mp4, .mov, .mkv, ...) there")
    items, frames = [], 0
    for sequence in sequences:
        try:
            plan = plan_sequence(inputs, sequence, settings, plan_size)
        except (SequenceError, FrameFileError) as err:  # one bad sequence: one line, the others go on
            problems.append(str(err))
            continue
        save_cut_list(outputs, run_id, plan)
        frames += len(sequence.frames)
        items += work_items(plan, done)
    return items, problems, frames


def chunk_rows_key(run_id: str, item: dict) -> str:
    """runs/<id>/frames/<sequence>/s<shot>-c<chunk>.parquet: one chunk's rows."""
    return run_key(run_id, f"{FRAMES_DIR}{item['sequence_id']}/s{item['shot']:05d}-c{item['chunk']:04d}.parquet")


def chunk_report_key(run_id: str, item: dict) -> str:
    return run_key(run_id, f"chunks/{item['sequence_id']}/s{item['shot']:05d}-c{item['chunk']:04d}.json")

