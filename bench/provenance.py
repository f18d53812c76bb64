"""CPU seconds to label (XMP) and sign (C2PA) one 4096x4096 output, and the bytes it adds, as JSON.

The output is a 4096x4096 photo-like image (scikit-image's astronaut enlarged, with grain) encoded
as the actor encodes it (PNG level 1, JPEG quality 95); its parent is the 1024x1024 input. Timed:
the XMP merge, and the signing (c2pa-python: the parent ingredient read from its bytes, the claim,
the output's hash, the ES256 signature) with a test identity made here. Process CPU seconds
(c2pa's native code is counted whichever thread runs it). Goal (issue 29): <= 0.3 CPU-s each.

    .venv/bin/python bench/provenance.py [--size 4096] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root

import op4ksr  # noqa: E402
from op4ksr.imageops import bicubic_resize  # noqa: E402
from op4ksr.images.codec import decode_image, encode_image  # noqa: E402
from op4ksr.provenance.identity import check_identity  # noqa: E402
from op4ksr.provenance.lineage import GENERATIVE, Lineage  # noqa: E402
from op4ksr.provenance.manifest import ManifestSigner, quality_summary  # noqa: E402
from op4ksr.provenance.throwaway_identity import make_test_identity  # noqa: E402
from op4ksr.provenance.xmp import merged_xmp  # noqa: E402

MIME = {"png": "image/png", "jpeg": "image/jpeg"}


def images(size: int):
    """(decoded 1/4-size input, its PNG bytes, the 4x output (3, size, size))."""
    import skimage.data

    photo = torch.from_numpy(skimage.data.astronaut().astype(np.float32) / 255).permute(2, 0, 1)[None]
    grain = 0.01 * torch.randn(1, 1, size, size, generator=torch.Generator().manual_seed(0))
    output = (bicubic_resize(photo, (size, size)) + grain).clamp(0, 1)[0]
    small = bicubic_resize(output[None], (size // 4, size // 4)).clamp(0, 1)[0]
    from PIL import Image
    import io

    buffer = io.BytesIO()
    Image.fromarray((small.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)).save(buffer, "PNG")
    parent = buffer.getvalue()
    return decode_image(parent), parent, output


def cpu_seconds(fn, repeats: int) -> tuple[float, object]:
    """(median process CPU seconds, last result) of `repeats` calls after one warm-up call."""
    result, spent = fn(), []
    for _ in range(repeats):
        c0 = time.process_time()
        result = fn()
        spent.append(time.process_time() - c0)
    return statistics.median(spent), result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    source, parent, output = images(args.size)
    with tempfile.TemporaryDirectory() as folder:
        files = make_test_identity(folder)
        identity = check_identity(files.cert_chain.read_bytes(), files.private_key.read_bytes(), "es256",
                                  cert_key="cert", key_key="key")
    signer = ManifestSigner(identity)
    lineage = Lineage(source_key="masters/astronaut.png", source_sha256=source.source_sha256,
                      software_version=op4ksr.__version__, model_id="bench", params_hash="0" * 16,
                      digital_source_type=GENERATIVE, input_size=f"{args.size // 4}x{args.size // 4}",
                      output_size=f"{args.size}x{args.size}")
    quality = quality_summary({"ap_excess": 0.01, "flagged": False})
    result = {"size": args.size, "parent_bytes": len(parent), "identity": "test, ES256 (P-256)"}
    xmp_cpu, xmp = cpu_seconds(lambda: merged_xmp(source.xmp, lineage), args.repeats)
    result["xmp_cpu_s"], result["xmp_bytes"] = round(xmp_cpu, 5), len(xmp)
    for fmt in ("png", "jpeg"):
        encoded = encode_image(output, source, fmt, png_compress_level=1, quality=95, xmp=xmp)
        sign_cpu, signed = cpu_seconds(lambda: signer.sign(encoded, MIME[fmt], lineage, parent, "image/png", quality),
                                       args.repeats)
        result[fmt] = {"output_bytes": len(encoded), "sign_cpu_s": round(sign_cpu, 4),
                       "bytes_added_by_c2pa": len(signed.data) - len(encoded)}
    import c2pa

    result["versions"] = {"python": platform.python_version(), "c2pa-python": _version("c2pa-python"),
                          "c2pa-rs": c2pa.sdk_version(), "torch": torch.__version__}
    result["machine"] = platform.processor() or platform.machine()
    print(json.dumps(result, indent=2))


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    main()
