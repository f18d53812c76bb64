"""`op4ksr compare`: run two or more variants over one sample of a catalog and put them side by side."""
from __future__ import annotations

import argparse
import re
import shlex

from jobs.common import add_config_arguments, config_from_args
from omegaconf import DictConfig, ListConfig, OmegaConf

from jobs.config import ConfigError, load_config
from op4ksr.errors import UserError
from pipeline.run.interrupted import RunInterrupted

DESCRIPTION = """\
Choose with evidence before a catalog-wide run. Take a deterministic sample of input.uri
(compare.sample inputs, stratified by format and file size), run every variant over it with the
batch pipeline (actors, per-image reports, manifest, cost ledger), each under
<output.uri>/variants/<name>/, and write <output.uri>/compare/comparison.html (per-variant
quality, flags, failures, seconds and USD per image; the same crop of every variant) and
comparison.parquet (one row per image and variant). A variant is config overrides over the
rest of the config: another model or settings, or another upscaler (peer.kind=spandrel: a
PyTorch SR checkpoint; peer.kind=command: any command line). A rerun reuses what each variant
already produced (the usual done check).

examples:
  op4ksr compare input.uri=s3://archive/scans/ output.uri=s3://archive/compare/ \\
      --variant "backproject sr.fidelity=backproject" --variant "wavelet sr.fidelity=wavelet" \\
      --variant "esrgan peer.kind=spandrel peer.path=RealESRGAN_x4plus.safetensors peer.tile=256"
  op4ksr compare --config my-compare.yaml      # compare.variants: [{name:, model:, overrides: [...]}]
"""

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="op4ksr compare", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", action="append", default=[], metavar='"NAME key=value ..."',
                        help="a variant: its name, then its config overrides (repeatable; added to compare.variants)")
    parser.add_argument("--sample", type=int, help="inputs in the sample (compare.sample)")
    add_config_arguments(parser)
    return parser


def variants_of(cfg, flags: list[str]) -> list[tuple[str, list[str]]]:
    """(name, overrides) of every variant: compare.variants, then each --variant; ConfigError, one line,
    for an entry that is not {name:, model:, overrides: [...]} or a flag that does not split."""
    variants = []
    for entry in cfg.compare.variants:
        entry = OmegaConf.to_container(entry) if isinstance(entry, (DictConfig, ListConfig)) else entry
        if not isinstance(entry, dict) or set(entry) - {"name", "model", "overrides"} or "name" not in entry:
            raise ConfigError(f"compare.variants entry {entry!r}: give a mapping of name, and model and/or overrides "
                              "only, e.g. {name: wavelet, overrides: [sr.fidelity=wavelet]}")
        overrides = entry.get("overrides") or []
        if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
            raise ConfigError(f"compare.variants entry {entry['name']!r}: overrides={overrides!r} must be a list of "
                              "key=value texts")
        variants.append((str(entry["name"]), overrides + ([f"model.path={entry['model']}"] if entry.get("model") else [])))
    for flag in flags:
        try:
            words = shlex.split(flag)
        except ValueError as err:  # an unbalanced quote
            raise ConfigError(f"--variant {flag!r}: {err}; quote each override whole, e.g. "
                              "--variant \"cmd peer.command='prog {input} {output}'\"") from None
        if not words:
            raise ConfigError('--variant "" : give a name, then key=value overrides')
        variants.append((words[0], words[1:]))
    names = [name for name, _ in variants]
    bad = [n for n in names if not NAME.match(n)]
    if bad or len(set(names)) != len(names) or len(names) < 2:
        raise ConfigError(f"variants {names}: need two or more, with distinct names of letters, digits, . _ - "
                          f"(compare.variants or --variant)")
    return variants


# what every variant shares: the sample's catalog and where it is read
SHARED_SECTIONS = ("input.", "storage.", "output.uri", "run.", "compare.")


def checked_variants(args, extra: list[str], variants, output_for) -> list[tuple[str, list[str], object]]:
    """(name, overrides, its config) of every variant, each loaded and checked as its run would be (model,
    peer, device, sizes) before anything is listed or started: a typo in the last variant is refused
    before the first runs. A variant may not change what the variants share (input.*, storage.*, ...)."""
    from jobs.specs import build_run_spec

    checked = []
    for name, overrides in variants:
        shared = [o for o in overrides if o.split("=", 1)[0].strip().startswith(SHARED_SECTIONS)]
        if shared:
            raise ConfigError(f"variant {name}: {shared[0]} changes what every variant shares "
                              f"({', '.join(s.rstrip('.') for s in SHARED_SECTIONS)}); set it for the whole comparison")
        try:
            cfg = load_config(args.config, [*args.overrides, *extra, *overrides, f"output.uri={output_for(name)}",
                                            "run.id="])
            build_run_spec(cfg, "check", "")  # every check a run makes before it writes: nothing is written here
        except UserError as err:
            raise ConfigError(f"variant {name}: {err}") from None
        checked.append((name, overrides, cfg))
    return checked


def main(argv: list[str]) -> int:
    args = build_parser().parse_intermixed_args(argv)  # key=value items may come after the flags
    extra = [f"compare.sample={args.sample}"] if args.sample is not None else []
    cfg = config_from_args(args, extra)
    variants = variants_of(cfg, args.variant)
    if cfg.storage.embedded:
        raise ConfigError("op4ksr compare needs a lasting store: set storage.embedded=false and point input.uri "
                          "and output.uri at a bucket or local folders")
    if not cfg.input.uri or not cfg.output.uri:
        raise ConfigError("input.uri and output.uri must both be set (s3://bucket/prefix/ or a local folder)")

    from jobs.specs import storage_spec
    from pipeline.ledger.comparison_page import VARIANTS, write_comparison
    from pipeline.listing.inputs import check_listable, list_inputs
    from pipeline.listing.read_only import check_output_apart, excluded_prefixes
    from pipeline.listing.sample import stratified_sample
    from pipeline.fleet.ray_session import ray_session

    check_output_apart(cfg.input.uri, cfg.output.uri)  # before anything is written
    inputs, root = storage_spec(cfg, cfg.input.uri).open(), storage_spec(cfg, cfg.output.uri).open()
    checked_variants(args, extra, variants, lambda name: root.uri_for(f"{VARIANTS}{name}"))  # all, before any runs
    check_listable(inputs, cfg.input.extensions)
    # the comparison's own outputs (variants/, compare/) are never sampled, when output.uri is inside input.uri
    listing = list_inputs(inputs, cfg.input.extensions, exclude=excluded_prefixes(cfg.input.uri, [cfg.output.uri]))
    sample = stratified_sample(listing, int(cfg.compare.sample))
    print(f"sample: {len(sample)} inputs of {inputs.spec.uri}")
    runs, failed = [], 0
    with ray_session(cfg.pipeline.ray_num_cpus):  # one Ray for every variant's run
        for name, overrides in variants:
            try:
                run, failures = _run_variant(args, extra, name, overrides, root, sample)
            except (RunInterrupted, KeyboardInterrupt) as err:
                raise _interrupted(name, [r.name for r in runs], err) from None
            runs.append(run)
            failed += failures
    page, table = write_comparison(root, runs, [obj.key for obj in sample], inputs,
                                   crops=int(cfg.compare.crops), threshold=float(cfg.report.threshold))
    print(f"comparison: {page}\ntable: {table}")
    return 0 if failed == 0 else 1


def _interrupted(name: str, finished: list[str], err: BaseException) -> RunInterrupted:
    """One line for Ctrl-C during variant `name`: the variants finished before it, what its run recorded, how to resume."""
    done = f"variants finished: {', '.join(finished)}; " if finished else ""
    if isinstance(err, RunInterrupted) and err.summary is not None:
        s = err.summary
        run = f"its run {s.run_id} recorded {s.ok} ok, {s.failed} failed, {s.skipped} skipped of {s.total}; "
    else:
        run = ""
    return RunInterrupted(f"interrupted in variant {name}: {done}{run}rerun the same command to resume (finished "
                          "variants and images are reused, and priced from the runs that made them)")


def _run_variant(args, extra: list[str], name: str, overrides: list[str], root, sample):
    """One variant's backfill over the sample, under <output.uri>/variants/<name>/: (VariantRun, failures)."""
    from actors.peers import model_stage
    from jobs.session import run_session
    from pipeline.ledger.comparison import VariantRun
    from pipeline.ledger.comparison_page import VARIANTS
    from pipeline.run.backfill import run_backfill
    from pipeline.run.console import progress_printer

    output = root.uri_for(f"{VARIANTS}{name}")  # a folder, or an s3:// prefix (output.uri gains its slash)
    # the same files and overrides, then the variant's own, its own output prefix and a new run id
    variant_cfg = load_config(args.config, [*args.overrides, *extra, *overrides, f"output.uri={output}", "run.id="])
    print(f"variant {name}: {' '.join(overrides) or '(the config as it is)'}")
    with run_session(variant_cfg) as (spec, _server):
        summary = run_backfill(spec, model_stage(spec.model), progress_printer(), listing=sample)  # priced at spec.prices
    print(f"variant {name}: ok {summary.ok}  failed {summary.failed}  skipped {summary.skipped}")
    return VariantRun(name, spec.output.open(), summary.run_id), summary.failed
