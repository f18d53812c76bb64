"""One output's provenance, checked: its C2PA manifest read and validated by c2pa-python's Reader.

A check passes when the claim signature is valid, the manifest's hash binding matches the bytes
(one flipped byte fails it), the parent ingredient agrees with the op4ksr assertion, and, where
asked, the signer chains to a given trust anchor and the parent's sha256 matches the master
bytes it names. Each failure is one line in `problem`.
"""
from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from typing import Callable

from op4ksr.provenance.lineage import IPTC_SOURCE_TYPES, sha256_hex
from op4ksr.provenance.manifest import ASSERTION, load_c2pa

HASH_CODES = ("assertion.dataHash", "assertion.boxesHash", "assertion.bmffHash", "assertion.collectionHash",
              "assertion.hashedURI")


@dataclass
class Verdict:
    """One image's row of `op4ksr verify`."""

    path: str
    ok: bool = False
    c2pa: str = "none"            # signed | sidecar | none
    signature: str = "-"          # valid | invalid
    hash_binding: str = "-"       # match | mismatch
    trust: str = "-"              # trusted | untrusted | not checked
    parent: str = "-"             # match | mismatch | described (not checked against the master)
    digital_source_type: str = "-"
    label: str = "-"
    signer: str = "-"
    problem: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def _settings(trust_anchors_pem: str | None) -> dict:
    settings = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}
    if trust_anchors_pem:
        settings["trust"] = {"user_anchors": trust_anchors_pem}
    return settings


def read_manifest_store(data: bytes, mime: str, sidecar: bytes | None, trust_anchors_pem: str | None) -> dict | None:
    """The manifest store as c2pa's Reader reports it (with validation results); None when there is none."""
    c2pa = load_c2pa()
    context = c2pa.Context.from_dict(_settings(trust_anchors_pem))
    try:
        with c2pa.Reader(mime, io.BytesIO(data), manifest_data=sidecar, context=context) as reader:
            return json.loads(reader.json())
    except c2pa.C2paError.ManifestNotFound:
        return None


def verify_output(path: str, data: bytes, mime: str, *, sidecar: bytes | None = None,
                  trust_anchors_pem: str | None = None,
                  read_parent: Callable[[str], bytes | None] | None = None) -> Verdict:
    """The Verdict of one output's bytes; `read_parent(key)` gives the master it names, when checking inputs."""
    verdict = Verdict(path, c2pa="sidecar" if sidecar is not None else "signed")
    try:
        store = read_manifest_store(data, mime, sidecar, trust_anchors_pem)
    except Exception as err:  # noqa: BLE001 - c2pa's parse errors: this file fails, the listing goes on
        verdict.c2pa, verdict.problem = "none", f"unreadable C2PA data: {' '.join(str(err).split())[:200]}"
        return verdict
    if store is None:
        verdict.c2pa, verdict.problem = "none", "no C2PA manifest"
        return verdict
    manifest = store["manifests"][store["active_manifest"]]
    verdict.label = store["active_manifest"]
    verdict.signer = (manifest.get("signature_info") or {}).get("common_name", "-")
    failures = [f["code"] for f in (store.get("validation_results") or {}).get("activeManifest", {}).get("failure", [])]
    successes = {s["code"] for s in (store.get("validation_results") or {}).get("activeManifest", {}).get("success", [])}
    hash_failures = [c for c in failures if c.startswith(HASH_CODES)]
    signature_failures = [c for c in failures if c.startswith(("claimSignature", "signingCredential", "timeStamp"))
                          and c != "signingCredential.untrusted"]
    verdict.hash_binding = "mismatch" if hash_failures else "match"
    verdict.signature = "invalid" if signature_failures else "valid"
    verdict.trust = ("trusted" if "signingCredential.trusted" in successes else "untrusted") if trust_anchors_pem \
        else "not checked"
    verdict.digital_source_type = _source_type(manifest)
    ours = next((a["data"] for a in manifest.get("assertions", []) if a.get("label") == ASSERTION), None)
    verdict.parent, parent_problem = _check_parent(manifest, ours, read_parent)
    others = [c for c in failures if c not in hash_failures + signature_failures and c != "signingCredential.untrusted"]
    problems = ([f"hash binding fails ({', '.join(sorted(set(hash_failures)))}): the file changed after signing"]
                if hash_failures else [])
    problems += [f"signature invalid ({', '.join(signature_failures)})"] if signature_failures else []
    problems += ["signer not trusted by the --trust anchors"] if verdict.trust == "untrusted" else []
    problems += [parent_problem] if parent_problem else []
    problems += [f"C2PA validation failed ({', '.join(others)})"] if others else []
    verdict.problem = "; ".join(problems)
    verdict.ok = not problems
    return verdict


def _source_type(manifest: dict) -> str:
    for assertion in manifest.get("assertions", []):
        if assertion.get("label", "").startswith("c2pa.actions"):
            for action in assertion["data"].get("actions", []):
                if action.get("action") == "c2pa.edited" and action.get("digitalSourceType"):
                    return action["digitalSourceType"].removeprefix(IPTC_SOURCE_TYPES)
    return "-"


def _check_parent(manifest: dict, ours: dict | None, read_parent) -> tuple[str, str]:
    """(parent column, problem or ''): the parentOf ingredient against the op4ksr assertion and the master."""
    parents = [i for i in manifest.get("ingredients", []) if i.get("relationship") == "parentOf"]
    if not parents or ours is None:
        return "missing", f"no parentOf ingredient or no {ASSERTION} assertion: not an op4ksr output's manifest"
    claimed = (parents[0].get("metadata") or {}).get("org.op4ksr.sha256")
    source = ours.get("source") or {}
    if claimed != source.get("sha256"):
        return "mismatch", "the parent ingredient's sha256 differs from the op4ksr assertion's"
    if read_parent is None:
        return "described", ""
    master = read_parent(source.get("key", ""))
    if master is None:
        return "missing", f"parent {source.get('key')!r} not found under --inputs"
    if sha256_hex(master) != claimed:
        return "mismatch", f"parent {source.get('key')!r} under --inputs is not the file this output was made from"
    return "match", ""
