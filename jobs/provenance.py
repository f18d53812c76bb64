"""`op4ksr provenance test-identity DIR`: a throwaway CA and C2PA signing certificate for tests and demos."""
from __future__ import annotations

import argparse

DESCRIPTION = """\
Make a test signing identity: a CA (test-ca.pem, the --trust anchor for `op4ksr verify`), a
signing certificate issued by it (test-signer-chain.pem) and its key (test-signer-key.pem, mode
600). Anyone can make one, so nothing it signs is trusted unless a verifier is given its CA:
for demos and tests only. Publish with your organisation's certificate (docs/PROVENANCE.md).

example:
  op4ksr provenance test-identity ./test-identity
  op4ksr backfill --config local input.uri=./scans output.uri=./out \\
      provenance.cert_chain=./test-identity/test-signer-chain.pem provenance.private_key=./test-identity/test-signer-key.pem
"""


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="op4ksr provenance", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("test-identity", help="write a throwaway CA, signing certificate and key into DIR")
    make.add_argument("folder", metavar="DIR")
    make.add_argument("--days", type=int, default=365, help="validity of the certificates (default 365)")
    args = parser.parse_args(argv)
    from op4ksr.provenance.throwaway_identity import make_test_identity

    files = make_test_identity(args.folder, days=args.days)
    print(f"test identity (not for publication), valid {args.days} days:\n  provenance.cert_chain={files.cert_chain}\n"
          f"  provenance.private_key={files.private_key}\n  trust anchor for op4ksr verify --trust: {files.trust_anchor}")
    return 0
