"""`op4ksr demo`: the whole product on this machine: embedded S3, Ray, actors, reports, manifest."""
from __future__ import annotations

import argparse
from pathlib import Path

from jobs.common import add_config_arguments, config_from_args

DESCRIPTION = """\
Start a local S3 server (moto, on 127.0.0.1), upload sample images, run the real backfill
(S3 over HTTP, a local Ray, a warm model actor, quality reports, the run manifest), print the
summary and copy the results to a local folder you can open.
"""


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="op4ksr demo", description=DESCRIPTION)
    parser.add_argument("--out", type=Path, default=Path("demo-output"), help="local folder for the results")
    parser.add_argument("--identity", type=Path, metavar="DIR",
                        help="the test signing identity that signs the demo's outputs, made there when missing "
                             "(default: demo-identity beside --out; not used when provenance.cert_chain is set)")
    parser.add_argument("--samples", type=Path, metavar="DIR",
                        help="only write the sample images into DIR (inputs to try upscale and backfill on) and exit")
    add_config_arguments(parser, default=("demo",))
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    test_identity = None
    if not cfg.provenance.cert_chain and not args.samples:  # the demo's outputs are signed, by a test identity
        cfg, test_identity = _with_test_identity(cfg, args.identity or args.out.parent / "demo-identity")
    if args.samples:
        from pipeline.storage import open_storage
        from jobs.demo_samples import upload_samples

        print(f"{upload_samples(open_storage(str(args.samples)))} sample images written to {args.samples.resolve()}")
        return 0

    from actors.upscaler import UpscaleActor

    from pipeline.run.backfill import run_backfill
    from jobs.demo_samples import copy_tree, upload_samples
    from pipeline.run.console import print_summary, progress_printer
    from jobs.session import run_session
    from jobs.specs import telemetry_from_config

    with run_session(cfg) as (spec, _server), telemetry_from_config(cfg) as telemetry:
        count = upload_samples(spec.input.open())
        print(f"uploaded {count} sample images to {spec.input.uri}")
        summary = run_backfill(spec, UpscaleActor, progress_printer(), telemetry=telemetry)  # priced at spec.prices
        copied = copy_tree(spec.output.open(), "", args.out)
    summary.report_uri = ""  # the embedded server is gone: name the local copy instead
    print_summary(summary, cfg)
    print(f"\n{copied} files copied to {args.out.resolve()}  (images/, reports/, runs/{summary.run_id}/)")
    print(f"report: {(args.out / 'runs' / summary.run_id / 'report.html').resolve()}")
    if test_identity is not None:
        _print_signed(args.out / "images", test_identity)
    return 0 if summary.failed == 0 else 1


def _with_test_identity(cfg, folder: Path):
    """The config signing with the test identity in `folder` (made there first if missing), and its files."""
    from omegaconf import OmegaConf

    from op4ksr.provenance.throwaway_identity import IdentityFiles, make_test_identity

    files = IdentityFiles(folder / "test-signer-chain.pem", folder / "test-signer-key.pem", folder / "test-ca.pem")
    if not all(p.is_file() for p in (files.cert_chain, files.private_key, files.trust_anchor)):
        files = make_test_identity(folder)
    signing = {"cert_chain": str(files.cert_chain.resolve()), "private_key": str(files.private_key.resolve())}
    return OmegaConf.merge(cfg, {"provenance": signing}), files


def _print_signed(images: Path, files) -> None:
    """How many of the demo's outputs carry a C2PA manifest that verifies against the test CA, and how to check."""
    from jobs.verify import MIME
    from op4ksr.provenance.verify import verify_output

    anchors = files.trust_anchor.read_text()
    verdicts = [verify_output(str(p), p.read_bytes(), MIME[p.suffix.lower()], trust_anchors_pem=anchors)
                for p in sorted(images.rglob("*")) if p.suffix.lower() in MIME]
    signed = sum(v.ok and v.trust == "trusted" for v in verdicts)
    print(f"{signed} of {len(verdicts)} outputs are signed (C2PA, test identity in {files.cert_chain.parent}, "
          f"not for publication); check them: op4ksr verify {images} --trust {files.trust_anchor}")
