"""A video file's chunk on the film actor (actors/film.py): its frames decoded, upscaled in order, one part.

The work item (pipeline/run/film_video_plan.py) names the video, the chunk's frame indices, its lead-in
and which frames an earlier run did. The actor fetches the video once (kept in a scratch folder for
its next chunks of the same video), seeks to the keyframe at or before the chunk's first frame and
numbers frames by the pts the plan recorded (op4ksr.video.video_parts.chunk_frames; from the first
frame where seeking cannot), runs every frame of the chunk through ChunkRunner, and
writes the owned frames (after the lead-in) as one lossless part. Frames an earlier run did are
upscaled again for the part but get no new row: their rows keep naming the part they were done in.
The part is stored before the rows, so a row always names a whole part.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from op4ksr.video import decode
from op4ksr.video.chunks import ChunkRunner
from op4ksr.video.seek import DecodeCount
from op4ksr.video.video_parts import PartWriter, chunk_frames
from pipeline.manifest.frames import frame_rows_bytes
from pipeline.run.film_plan import chunk_report_key, chunk_rows_key
from pipeline.run.film_report import profile_b64
from pipeline.storage import safe_key


class VideoFiles:
    """The videos an actor has fetched, by key, in a scratch folder that lives as long as the actor."""

    def __init__(self, inputs):
        self.inputs, self._scratch = inputs, tempfile.TemporaryDirectory(prefix="op4ksr-videos-")

    def local(self, key: str) -> Path:
        path = Path(self._scratch.name) / "in" / safe_key(key)
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            self.inputs.get_file(key, str(path))
        return path

    def part_path(self, item: dict) -> Path:
        return Path(self._scratch.name) / f"part-{item['shot']}-{item['chunk']}.mkv"


def run_video_chunk(actor, files: VideoFiles, item: dict) -> list[dict]:
    """The rows of the chunk's frames without an earlier `done` row (`actor`: a FilmChunkActor)."""
    options, size = actor.options, (item["height"], item["width"])
    info = decode.probe(files.local(item["sequence"]), allow_interlaced=True)
    runner = ChunkRunner(actor.upscale, size, len(item["frames"]), options.video)
    part, rows, lead_in_seconds = files.part_path(item), [], 0.0
    writer, count = PartWriter(part, info, size), DecodeCount()
    frames = chunk_frames(info, item["frames"][0], item["frames"][-1] + 1, item.get("pts"), count)
    try:
        for position, frame in enumerate(frames):
            result = runner.run(frame.rgb)
            if position < item["lead_in"]:  # the chunk before writes it; run here to warm the fusion up
                lead_in_seconds += result.seconds
                continue
            writer.add(result.output)
            if not item["done"][position]:
                rows.append({"run_id": options.run_id, "sequence": item["sequence"], "frame": frame.index,
                             "key": item["sequence"], "shot": item["shot"], "chunk": item["chunk"],
                             "output_key": item["part"], "status": "failed" if result.error else "done",
                             "error": result.error, "seconds": result.seconds, "model_id": actor.model.model_id,
                             "params_hash": options.params_hash, "actor_id": actor.actor_id})
    finally:
        writer.close()
    actor.output.put_file(item["part"], str(part), "video/x-matroska")
    part.unlink()
    finished = time.time()
    for row in rows:
        row.update(lead_in_seconds=lead_in_seconds / max(len(rows), 1), finished_at=finished)
    report = {**item, "report": runner.report(), "rows": len(rows), "profile_png": profile_b64(runner),
              "decode": {"seeked": count.seeked, "frames_decoded": count.decoded}}
    actor.output.put(chunk_report_key(options.run_id, item), json.dumps(report, default=str).encode(),
                     "application/json")
    # last: the rows say the part is whole
    actor.output.put(chunk_rows_key(options.run_id, item), frame_rows_bytes(rows), "application/vnd.apache.parquet")
    return rows
