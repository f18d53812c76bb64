"""The GPU actor: loads the model once, warms up, upscales batches, uploads its own outputs.

Ray Data calls `__call__` with a batch of records from the fetch stage and gets back the same
records, filled in, without pixels: outputs never travel back through the object store. Up
to two calls run at once in one actor (Ray's multi-threaded actor pool); a lock keeps one
forward on the device at a time, so batch i's forward overlaps batch i-1's encode + upload.
"""
from __future__ import annotations

import json
import pickle
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import torch

import op4ksr
from actors.provenance import OutputStamper, sidecar_key
from op4ksr.images.codec import encode_image, finish_output
from op4ksr.imageops import bicubic_resize
from op4ksr.quality import no_reference_scores, quality_report
from op4ksr.quality.contradiction import contradiction_maps
from op4ksr.quality.evidence import image_evidence, manifest_fields
from op4ksr.quality.heatmap import heatmap_png
from pipeline.manifest.layout import heatmap_key, report_key
from pipeline.storage.materialise import load_materialised
from pipeline.fleet.pool_watch import worker_id
from pipeline.manifest.records import failed, manifest_table, stage_clock
from pipeline.fleet.spec import ActorOptions, ModelSource

CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "tiff": "image/tiff"}


class UpscaleActor:
    """Holds one warm model; `__call__(table of fetched records) -> table of manifest records`."""

    def __init__(self, model: ModelSource, options: ActorOptions):
        self.started_at = time.time()  # the cost ledger charges the device from here (docs/COST.md)
        start = time.perf_counter()
        if options.torch_threads:
            torch.set_num_threads(options.torch_threads)
        self.model = self.load_model(model)
        self.load_seconds = time.perf_counter() - start
        self.options = options
        self.period_px = options.period_px or self.model.token_period_px
        self.output = options.output.open()
        self.pool = ThreadPoolExecutor(max(1, options.upload_threads), thread_name_prefix="encode-upload")
        self.device_lock = threading.Lock()
        self.actor_id = worker_id()  # host:pid, as the run's pool watch knows this process
        self.warmup_seconds = self._warm_up(options.warmup_shapes or ((8 * self.period_px, 8 * self.period_px),))
        self.provenance = {"version": op4ksr.__version__, "model_id": self.model.model_id,
                           "params_hash": options.params_hash}
        self.stamper = OutputStamper(options.provenance, self.model.model_id, options.params_hash)
        self.actor_fields = {"actor_id": self.actor_id, "device": str(self.model.device),
                             "actor_started_at": self.started_at, "actor_load_seconds": self.load_seconds,
                             "actor_warmup_seconds": self.warmup_seconds}

    def load_model(self, model: ModelSource):
        """The model this actor runs: anything with `upscale(x_lr (B, 3, h, w), (H, W)) -> (B, 3, H, W)`,
        `device`, `model_id` and `token_period_px` (the op4ksr model; actors/peers.py's other upscalers)."""
        return load_materialised(model.spec, model.storage)  # an object store's copy is gone once loaded

    def _warm_up(self, shapes) -> float:
        start = time.perf_counter()
        for height, width in shapes:
            self.model.upscale(torch.rand(1, 3, max(1, height // 4), max(1, width // 4)), (height, width))
        _synchronize(self.model.device)
        return time.perf_counter() - start

    def __call__(self, batch: pa.Table) -> pa.Table:
        records = batch.to_pylist()
        todo = [r for r in records if r["status"] is None]
        by_size: dict[str, list[dict]] = {}
        for record in todo:
            by_size.setdefault(record["output_size"], []).append(record)
        futures = []
        for size_text, group in by_size.items():
            width, height = map(int, size_text.split("x"))
            futures += self._run_group(group, (height, width))
        for future in futures:
            future.result()
        for record in records:
            record.pop("payload", None)
            record.update(self.actor_fields)
        return manifest_table(records)

    def _run_group(self, group: list[dict], size: tuple[int, int]) -> list:
        try:
            images = [pickle.loads(r["payload"]) for r in group]
            x_lr = torch.stack([im.rgb for im in images])  # (B, 3, h, w)
            with self.device_lock:
                started_at, start = time.time(), time.perf_counter()
                x_sr = self.model.upscale(x_lr, size)  # (B, 3, H, W) on the device
                reports = quality_report(x_sr, x_lr.to(x_sr.device), self.period_px, self.options.report_threshold,
                                         max_k=self.options.max_lag_multiple)
                maps = contradiction_maps(x_sr, x_lr.to(x_sr.device), self.period_px,
                                          self.options.evidence.cell_threshold)
                x_sr = x_sr.cpu()
                _synchronize(self.model.device)
                elapsed = time.perf_counter() - start
        except Exception as err:  # noqa: BLE001 - e.g. out of memory: these images fail, the run goes on
            for record in group:
                failed(record, err)
            return []
        share = elapsed / len(group)
        futures = []
        for record, image, rgb, lr, report, contradiction in zip(group, images, x_sr, x_lr, reports, maps):
            record.update(report.as_dict(), t_model=elapsed, gpu_seconds=share, model_started_at=started_at,
                          actor_id=self.actor_id)
            try:
                _no_reference_quality(rgb, lr, record, contradiction, self.options.evidence)
            except Exception as err:  # noqa: BLE001 - visible in the manifest; the batch goes on
                failed(record, err)
                continue
            futures.append(self.pool.submit(self._encode_and_upload, record, image, rgb, size))
        return futures

    def _encode_and_upload(self, record: dict, image, rgb: torch.Tensor, size: tuple[int, int]) -> None:
        record["encode_started_at"] = time.time()
        try:
            opts = self.options
            with stage_clock(record, "encode"):
                alpha = None if image.alpha is None else bicubic_resize(image.alpha[None], size)[0].clamp(0, 1)
                data, sidecar = self.stamper.stamp(record, image, lambda xmp: encode_image(
                    finish_output(rgb, alpha), image, opts.output_format, alpha=alpha, quality=opts.quality,
                    png_compress_level=opts.png_compress_level, provenance=self.provenance, xmp=xmp),
                    CONTENT_TYPES[opts.output_format])  # labelled, and signed when there is an identity
            # the label's and the signature's CPU is a stage of its own (CPU provenance), not the encode's
            record["cpu_encode_seconds"] -= record["cpu_provenance_seconds"]
            heatmap = record.pop("heatmap_png", None)
            with stage_clock(record, "upload"):
                if heatmap is not None:  # before the report, which names it
                    record["heatmap_key"] = heatmap_key(record["key"])
                    self.output.put(record["heatmap_key"], heatmap, "image/png")
                if sidecar is not None:  # first: an output whose manifest is beside it is never there without it
                    self.output.put(sidecar_key(record["output_key"]), sidecar, "application/c2pa")
                self.output.put(record["output_key"], data, CONTENT_TYPES[opts.output_format])
            record.update(status="ok", bytes_out=len(data) + len(sidecar or b"") + len(heatmap or b""),
                          requests_put=2 + (sidecar is not None) + (heatmap is not None))
            report = json.dumps({k: v for k, v in record.items() if k != "payload"}, default=str).encode()
            record["bytes_out"] += len(report)
            # the report is written after the image: a report always implies a whole image
            self.output.put(report_key(record["key"]), report, "application/json")
        except Exception as err:  # noqa: BLE001
            failed(record, err)


def _no_reference_quality(rgb: torch.Tensor, lr: torch.Tensor, record: dict, contradiction, evidence_options) -> None:
    """NIQE, colour shift and the evidence (faces, text; the map came from the device) of one output
    (3, H, W) on the CPU, outside the device lock, with a heatmap PNG (record["heatmap_png"]) when it is
    flagged; and their cost: t_quality and this thread's CPU seconds, added to the image's, with the
    tesseract processes' CPU seconds, which thread time cannot see (docs/QUALITY.md)."""
    with stage_clock(record, "quality"):
        scores = no_reference_scores(rgb[None], lr[None])[0]
        found = image_evidence(rgb, lr, contradiction, evidence_options)
        scores |= manifest_fields(found.fields)
        if found.flagged and contradiction.scores is not None:
            scores["heatmap_png"] = heatmap_png(rgb, contradiction, evidence_options.cell_threshold)
    ocr = found.fields.get("cpu_text_seconds", 0.0)
    record.update(scores, cpu_quality_seconds=record["cpu_quality_seconds"] + ocr,
                  cpu_seconds=record["cpu_seconds"] + ocr)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
