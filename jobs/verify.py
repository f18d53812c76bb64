"""`op4ksr verify`: check the C2PA manifests of outputs (a file, a folder or an object-store prefix)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jobs.common import add_config_arguments, config_from_args
from op4ksr.errors import UserError
from op4ksr.images.formats import EXTENSIONS

DESCRIPTION = """\
Read each image's C2PA manifest with c2pa-python and check it: the claim signature, the hash
binding to the image's bytes (a changed byte fails it), the signer against --trust anchors, the
parent ingredient (with --inputs: against the master it names) and the digital source type.
One row per image (or JSON Lines with --json); the exit status is 1 if any image fails. A
prefix is streamed: a million images never sit in memory. A sidecar <image>.c2pa is used when
the image has no manifest of its own.

examples:
  op4ksr verify demo-output/images --trust demo-output/identity/test-ca.pem
  op4ksr verify s3://archive/4k/images/ --inputs s3://archive/masters/ --json > audit.jsonl
"""
MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
        ".tif": "image/tiff", ".tiff": "image/tiff"}
COLUMNS = ("result", "c2pa", "signature", "hash_binding", "trust", "parent", "digital_source_type", "path")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="op4ksr verify", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="+", metavar="PATH|URI", help="an image, a folder or an s3:// prefix")
    parser.add_argument("--inputs", metavar="URI", help="the input prefix: check each parent's sha256 against it")
    parser.add_argument("--trust", action="append", default=[], metavar="PEM",
                        help="trust anchor certificates (PEM file; repeatable): an untrusted signer then fails")
    parser.add_argument("--json", action="store_true", help="one JSON object per image (JSON Lines)")
    add_config_arguments(parser, overrides=False)
    return parser


def _images(cfg, target: str):
    """(path shown, bytes, mime, sidecar bytes or None) for each image of a file, folder or prefix, streamed."""
    from jobs.specs import storage_spec

    path = Path(target)
    if "://" not in target and path.is_file():
        sidecar = path.with_name(path.name + ".c2pa")
        yield target, path.read_bytes(), MIME.get(path.suffix.lower()), sidecar.read_bytes() if sidecar.is_file() else None
        return
    if "://" not in target and not path.is_dir():
        raise UserError(f"{target}: no such file or folder")
    storage = storage_spec(cfg, target).open()
    listing = storage.iter_objects(extensions=(*MIME, ".c2pa"))
    pending = next(listing, None)
    while pending is not None:
        following = next(listing, None)  # a sidecar sorts right after its image: x.png, x.png.c2pa
        if not pending.key.endswith(".c2pa"):
            sidecar = None
            if following is not None and following.key == pending.key + ".c2pa":
                sidecar, following = storage.get(following.key), next(listing, None)
            yield storage.uri_for(pending.key), storage.get(pending.key), MIME[Path(pending.key).suffix.lower()], sidecar
        pending = following


def _parent_reader(cfg, inputs_uri: str | None):
    if not inputs_uri:
        return None
    from jobs.specs import storage_spec
    from pipeline.storage import ObjectNotFoundError

    inputs = storage_spec(cfg, inputs_uri).open()

    def read(key: str) -> bytes | None:
        try:
            return inputs.get(key)
        except (ObjectNotFoundError, ValueError):
            return None
    return read


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    args.overrides = [t for t in args.targets if "=" in t and not Path(t).exists()]
    targets = [t for t in args.targets if t not in args.overrides]
    cfg = config_from_args(args)
    from op4ksr.provenance.verify import Verdict, verify_output

    anchors = "".join(Path(p).read_text() for p in args.trust) if args.trust else None
    read_parent = _parent_reader(cfg, args.inputs)
    checked = failed = 0
    if not args.json:
        print(f"{'result':6} {'c2pa':7} {'signature':9} {'hash':8} {'trust':11} {'parent':9} {'source type':36} path")
    for target in targets:
        for shown, data, mime, sidecar in _images(cfg, target):
            verdict = verify_output(shown, data, mime, sidecar=sidecar, trust_anchors_pem=anchors,
                                    read_parent=read_parent) if mime else Verdict(shown, problem="not an image")
            checked, failed = checked + 1, failed + (not verdict.ok)
            _print(verdict, args.json)
    if not args.json:
        print(f"{checked} checked, {checked - failed} passed, {failed} failed", file=sys.stderr)
    return 1 if failed or not checked else 0


def _print(verdict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(verdict.as_dict()), flush=True)
        return
    v = verdict
    print(f"{'ok' if v.ok else 'FAIL':6} {v.c2pa:7} {v.signature:9} {v.hash_binding:8} {v.trust:11} {v.parent:9} "
          f"{v.digital_source_type:36} {v.path}" + ("" if v.ok else f"\n       {v.problem}"), flush=True)
