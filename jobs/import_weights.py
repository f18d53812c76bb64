"""`op4ksr import`: build an OP4KSR checkpoint from public Flux weights (folders or s3:// prefixes)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jobs.common import add_config_arguments, config_from_args
from jobs.specs import storage_spec
from op4ksr.errors import UserError

DESCRIPTION = """\
Build an OP4KSR checkpoint from public weights: a FluxPipeline folder (FLUX.1-dev,
FLUX.1-schnell) whose transformer is copied and whose text encoders encode the fixed prompt
once; a VAE (its config's "stride": 2 means the F16 layout, e.g. UltraFlux's; none means the
stock 8x one); LoRA adapters (diffusers, peft or OMGSR folders) merged into the weights.
Every PATH is a local folder or an s3:// prefix (storage.* keys as key=value). The output is a
normal checkpoint folder for --model / model.path; docs/MODELS.md walks through each case.

examples:
  op4ksr import --base /models/FLUX.1-dev --vae /models/UltraFlux-v1/vae --out /models/op4ksr-dev-f16
  op4ksr import --base /models/FLUX.1-dev --lora /models/OMGSR-F-1024 --timestep 0.55 --out /models/omgsr-f
  op4ksr import --base s3://models/FLUX.1-dev/ --out /models/dev storage.endpoint_url=http://minio:9000
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="op4ksr import", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, metavar="PATH", help="FluxPipeline folder, or a FluxTransformer2DModel folder")
    p.add_argument("--out", required=True, metavar="DIR", help="new checkpoint folder (local, or an s3:// prefix)")
    p.add_argument("--vae", metavar="PATH", help="AutoencoderKL folder (default: the pipeline's vae/)")
    p.add_argument("--vae-stride", type=int, choices=[1, 2], help="override the VAE config: 2 = F16, 1 = stock 8x")
    p.add_argument("--decode-shift", action="store_true",
                   help="save decode_shift=true: decode as UltraFlux's partitioned decoder (+1 row, +1 column)")
    p.add_argument("--lora", action="append", default=[], metavar="PATH", help="LoRA to merge (repeatable, in order)")
    p.add_argument("--prompt", default="", help="the fixed prompt (default: empty)")
    p.add_argument("--prompt-embeds", metavar="FILE", help="safetensors with the prompt embeddings (bare transformer)")
    p.add_argument("--max-sequence-length", type=int, metavar="N", help="T5 tokens (default 512 with guidance embeds, else 256)")
    p.add_argument("--timestep", type=float, default=1.0, help="t* of the one step (default 1.0)")
    p.add_argument("--guidance", type=float, default=1.0, help="guidance embedding value (default 1.0)")
    p.add_argument("--scale", type=float, default=4, help="default output / input size (default 4)")
    p.add_argument("--name", default="", help="model name (default: the base folder's name)")
    p.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"], help="weights dtype")
    p.add_argument("--weights", default="dtype", choices=["dtype", "int8"],
                   help="int8: the transformer blocks' Linears stored int8 per output channel (run with model.weights=int8)")
    add_config_arguments(p)
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_intermixed_args(argv)
    cfg = config_from_args(args)
    if _remote(args.out):
        _refuse_a_used_prefix(storage_spec(cfg, args.out))  # as a local --out must be empty
    from op4ksr.importing import ImportSpec, import_checkpoint

    from pipeline.storage.scratch import scratch

    with scratch("import") as folder:  # copies of s3:// inputs and a remote --out's build; gone at the end
        fetch = _Fetcher(cfg, folder)
        local_out = folder / "out" if _remote(args.out) else Path(args.out)
        spec = ImportSpec(
            base=fetch(args.base), out=local_out, vae=fetch(args.vae), vae_stride=args.vae_stride,
            loras=tuple(fetch(p) for p in args.lora), prompt=args.prompt, prompt_embeds=fetch(args.prompt_embeds),
            max_sequence_length=args.max_sequence_length, timestep=args.timestep, guidance=args.guidance,
            scale=args.scale, name=args.name, dtype=args.dtype, weights=args.weights, decode_shift=args.decode_shift,
            labels=tuple(fetch.labels.items()))
        index = import_checkpoint(spec)  # a UserError names the bad input; the CLI prints it as one line
        if _remote(args.out):
            _upload(storage_spec(cfg, args.out), local_out)
    print(f"wrote {args.out}: model_id {index['model_id']} (vae stride {index['source']['vae_stride']}, "
          f"{len(index['source']['loras'])} LoRA adapter(s) merged)", file=sys.stderr)
    return 0


def _remote(path: str | None) -> bool:
    return bool(path) and path.startswith("s3://")


class _Fetcher:
    """Local Paths for PATH arguments: s3:// prefixes (or objects) copied under `scratch`, labelled by their uri.

    Credentials come from the standard AWS chain, as for every job."""

    def __init__(self, cfg, scratch: Path):
        self.cfg, self.scratch, self.labels = cfg, scratch, {}

    def __call__(self, path: str | None) -> Path | None:
        if path is None:
            return None
        if not _remote(path):
            if not Path(path).exists():
                raise UserError(f"{path}: no such file or folder")
            return Path(path)
        from pipeline.storage.materialise import materialise_checkpoint

        target = self.scratch / f"in-{len(self.labels)}"
        name = path.rstrip("/").rsplit("/", 1)[-1]
        if name.endswith(".safetensors"):  # one object: fetch its parent prefix's object by key
            parent = storage_spec(self.cfg, path[: -len(name)]).open()
            target.mkdir(parents=True)
            parent.get_file(name, str(target / name))
            local = target / name
        else:
            spec = storage_spec(self.cfg, path)
            local = Path(materialise_checkpoint(spec, str(target), keep=_needed(spec.open())))
        self.labels[str(local)] = path
        return local


def _needed(storage):
    """For a FluxPipeline prefix, skip root-level files but model_index.json: a Hugging Face
    FLUX.1 repository also holds the original-format weights there (flux1-dev.safetensors,
    ae.safetensors: 24 GB the importer does not read)."""
    if storage.exists("model_index.json"):
        return lambda key: "/" in key or key == "model_index.json"
    return None


def _refuse_a_used_prefix(spec) -> None:
    """CheckpointError if anything is stored under the --out prefix: a checkpoint never lands on another."""
    from op4ksr.checkpoint import CheckpointError

    if next(iter(spec.open().iter_objects()), None) is not None:
        raise CheckpointError(f"--out {spec.uri} is not empty; remove what is under it or choose another prefix")


def _upload(spec, folder: Path) -> None:
    spec.open().put_tree(folder, last=["model_index.json"])  # the index last: its presence means complete
