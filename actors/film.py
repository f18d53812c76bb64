"""The model actor of a frame-sequence run: one chunk of a shot per call, its frames in order.

Ray Data calls it with a batch of one work item (pipeline/run/film_plan.py): the chunk's input
keys in frame order, how many lead-in frames open it, and which of its frames an earlier run did.
Each frame is fetched, run through op4ksr.video.chunks.ChunkRunner (a frame the model fails on
is filled from bicubic and the chunk goes on), written under output.uri at the input's own key
(same format, bit depth and frame number), and given one row. A frame done before is read back
from the output (the chunk's fusion goes on from it) and gets no new row; a lead-in frame is run
for the fusion only. Once every output of the chunk is stored, its rows are written to the run's
manifest (runs/<id>/frames/), so a row always means a whole output. A video file's chunk (item
`kind` video) runs through actors/film_video.py. Items come as JSON (one `work` column): a
sequence's and a video's have different fields.
"""
from __future__ import annotations

import json
import time

import pyarrow as pa
import torch

import op4ksr
from actors.film_video import VideoFiles, run_video_chunk
from op4ksr.video.chunks import ChunkRunner
from op4ksr.video.frames import encode_frame
from pipeline.fleet.pool_watch import worker_id
from pipeline.fleet.spec import ModelSource
from pipeline.manifest.frames import frame_rows_bytes, frame_table
from pipeline.run.film_plan import chunk_report_key, chunk_rows_key, read_stored_frame
from pipeline.run.film_spec import FilmOptions
from pipeline.storage.materialise import load_materialised

CONTENT_TYPES = {".dpx": "image/x-dpx", ".png": "image/png", ".tif": "image/tiff", ".tiff": "image/tiff",
                 ".exr": "image/x-exr"}


class FilmChunkActor:
    """Holds one warm model; `__call__(table of work items) -> table of per-frame rows`."""

    def __init__(self, model: ModelSource, options: FilmOptions):
        if options.torch_threads:
            torch.set_num_threads(options.torch_threads)
        self.model = self.load_model(model)
        self.options = options
        self.inputs, self.output = options.input.open(), options.output.open()
        self.actor_id = worker_id()
        self.provenance = {"version": op4ksr.__version__, "model_id": self.model.model_id}
        self.videos = VideoFiles(self.inputs)

    def load_model(self, model: ModelSource):
        """Anything with `upscale(x (B, 3, h, w), (H, W)) -> (B, 3, H, W)` and `model_id`."""
        return load_materialised(model.spec, model.storage)

    def upscale(self, rgb: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.model.upscale(rgb[None], size)[0].float().cpu()

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = []
        for work in batch.column("work").to_pylist():
            item = json.loads(work)
            rows += run_video_chunk(self, self.videos, item) if item.get("kind") == "video" else self.run_chunk(item)
        return frame_table(rows)

    def run_chunk(self, item: dict) -> list[dict]:
        """The rows of the chunk's frames run now (none for frames done before or lead-in frames)."""
        size = (item["height"], item["width"])
        runner = ChunkRunner(self.upscale, size, len(item["keys"]), self.options.video)
        rows, lead_in_seconds, transfer = [], 0.0, self.options.video.exr_transfer
        frames = zip(item["keys"], item["outputs"], item["frames"], item["done"])
        for position, (key, output_key, number, done) in enumerate(frames):
            frame = read_stored_frame(self.inputs, key, transfer)
            if done:  # an earlier run's output: kept, and the fusion goes on from it
                runner.run(frame.rgb, read_stored_frame(self.output, output_key, transfer).rgb)
                continue
            result = runner.run(frame.rgb)
            if position < item["lead_in"]:  # the chunk before writes it; run here to warm the fusion up
                lead_in_seconds += result.seconds
                continue
            self.output.put(output_key, encode_frame(result.output, frame, self.provenance),
                            CONTENT_TYPES.get(key[key.rfind("."):].lower()))
            rows.append({"run_id": self.options.run_id, "sequence": item["sequence"], "frame": number, "key": key,
                         "shot": item["shot"], "chunk": item["chunk"], "output_key": output_key,
                         "status": "failed" if result.error else "done", "error": result.error,
                         "seconds": result.seconds, "model_id": self.model.model_id,
                         "params_hash": self.options.params_hash, "actor_id": self.actor_id})
        finished = time.time()
        for row in rows:
            row.update(lead_in_seconds=lead_in_seconds / max(len(rows), 1), finished_at=finished)
        report = {**item, "report": runner.report(), "rows": len(rows)}
        self.output.put(chunk_report_key(self.options.run_id, item), json.dumps(report, default=str).encode(),
                        "application/json")
        # last: the rows say the outputs are whole
        self.output.put(chunk_rows_key(self.options.run_id, item), frame_rows_bytes(rows),
                        "application/vnd.apache.parquet")
        return rows
