"""Upscaling local files and folders in-process (the `op4ksr upscale` command), no Ray, no S3."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from op4ksr.errors import InputsAreReadOnly
from op4ksr.images.codec import decode_image, encode_image
from op4ksr.provenance.lineage import GENERATIVE, Lineage
from op4ksr.provenance.xmp import merged_xmp
from op4ksr.images.folders import image_files
from op4ksr.images.output_names import OutputClaims, collision_error, output_name
from op4ksr.inference.batch import upscale_batch
from op4ksr.model import OP4KSR
from op4ksr.sizing import SizePolicy


@dataclass(frozen=True, kw_only=True)
class OutputOptions:
    """How `op4ksr upscale` writes its outputs (output.*, sr.*; built by jobs/specs.py)."""

    format: str
    quality: int
    png_compress_level: int
    size: SizePolicy


@dataclass(frozen=True)
class Job:
    source: Path
    target: Path


@dataclass(frozen=True)
class Failure:
    source: Path
    error: str


def find_jobs(inputs: Iterable[str], out_dir: Path, extensions: Iterable[str], fmt: str) -> Iterator[Job]:
    """One job per image file: files as given, folders walked recursively with their structure mirrored.

    Inputs are read-only: an `out_dir` that is an input folder (compared by real path, so a symlink
    or ./ counts) is refused with InputsAreReadOnly before anything is written, and an `out_dir`
    inside an input folder is never walked, so a rerun never reads its own outputs back."""
    extensions = list(extensions)
    real_out = out_dir.resolve()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            real_in = path.resolve()
            if real_in == real_out:
                raise InputsAreReadOnly(f"--out {out_dir} is the input folder {item}: op4ksr never writes over "
                                        "its inputs (not with --overwrite either); no input was changed and "
                                        "nothing was written. Give another --out")
            skip = real_out if real_out.is_relative_to(real_in) else None
            for file in image_files(path, extensions):
                if skip is not None and file.resolve().is_relative_to(skip):
                    continue  # our own outputs, inside the input folder
                yield Job(file, out_dir / output_name(file.relative_to(path).as_posix(), fmt))
        else:
            yield Job(path, out_dir / output_name(path.name, fmt))


@dataclass(frozen=True)
class Plan:
    """The jobs to run, and the inputs that write nothing: refused (collisions) and skipped (exist)."""

    todo: list[Job]
    refused: list[Failure]
    existing: list[Job]


def plan_jobs(jobs: Iterable[Job], overwrite: bool = False, input_folders: Iterable[Path] = (),
              out_dir: Path | None = None) -> Plan:
    """Sort jobs before anything is written: an input given twice runs once; one whose output is an
    input, or lies inside an input folder other than one holding `out_dir`, is refused (inputs are
    read-only, whatever `overwrite` says); one whose output another input claimed first is refused by
    name (op4ksr.images.output_names, the backfill's rule); one whose output file exists is skipped
    unless `overwrite`."""
    jobs = list(jobs)
    sources = {job.source.resolve() for job in jobs}
    real_out = out_dir.resolve() if out_dir is not None else None
    guarded = [f.resolve() for f in input_folders]
    guarded = [f for f in guarded if real_out is None or not real_out.is_relative_to(f)]
    claims, seen = OutputClaims(), set()
    todo, refused, existing = [], [], []
    for job in jobs:
        source = job.source.resolve()
        if source in seen:
            continue
        seen.add(source)
        target = job.target.resolve()
        if target in sources or any(target.is_relative_to(folder) for folder in guarded):
            refused.append(Failure(job.source, f"InputsAreReadOnly: its output {job.target} is an input or inside "
                                               "an input folder; op4ksr never writes there (give another --out)"))
            continue
        owner = claims.claim(str(target), str(job.source))
        if owner is not None:
            refused.append(Failure(job.source, _describe(collision_error(str(job.target), owner))))
        elif job.target.exists() and not overwrite:
            existing.append(job)
        else:
            todo.append(job)
    return Plan(todo, refused, existing)


def _describe(err: Exception) -> str:
    return f"{type(err).__name__}: {err}"


def upscale_file(model: OP4KSR, job: Job, options: OutputOptions, provenance: dict) -> None:
    """Decode, upscale and write one file; raises with a plain message on any failure."""
    image = decode_image(job.source.read_bytes(), max_pixels=options.size.max_input_pixels)
    size = options.size.plan(*image.size)
    (rgb, alpha), = upscale_batch(model, [image], size)
    lineage = Lineage(source_key=str(job.source), source_sha256=image.source_sha256 or "",
                      software_version=provenance.get("version", ""), model_id=provenance.get("model_id", ""),
                      params_hash=provenance.get("params_hash"), digital_source_type=GENERATIVE,
                      input_size=f"{image.size[1]}x{image.size[0]}", output_size=f"{size[1]}x{size[0]}")
    # the XMP label on every output; C2PA signing is the backfill's (docs/PROVENANCE.md)
    data = encode_image(rgb, image, options.format, alpha=alpha, quality=options.quality,
                        png_compress_level=options.png_compress_level, provenance=provenance,
                        xmp=merged_xmp(image.xmp, lineage))
    job.target.parent.mkdir(parents=True, exist_ok=True)
    tmp = job.target.with_name(job.target.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(job.target)  # a target that exists is always a whole image


def upscale_paths(
    model: OP4KSR,
    jobs: list[Job],
    options: OutputOptions,
    provenance: dict,
    on_done: Callable[[Job, Failure | None], None] = lambda job, failure: None,
) -> list[Failure]:
    """Run every job, never stopping at a bad file; the failures, in input order."""
    failures = []
    for job in jobs:
        failure = None
        try:
            if not job.source.is_file():
                raise FileNotFoundError(f"no such file: {job.source}")
            upscale_file(model, job, options, provenance)
        except Exception as err:  # noqa: BLE001 - one bad file must not stop the batch
            failure = Failure(job.source, _describe(err))
            failures.append(failure)
        on_done(job, failure)
    return failures
