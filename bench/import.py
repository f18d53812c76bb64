"""Import memory: peak RSS / weight bytes of `op4ksr import` on a synthetic FLUX.1-dev-width checkpoint; prints JSON.

usage:
  python bench/import.py                                   # 1 double + 2 single blocks, 4 shards, bf16
  python bench/import.py --double 2 --single 4 --shards 6  # more blocks
  python bench/import.py --mode naive                      # the load-everything path, for comparison

A synthetic checkpoint (FLUX.1-dev widths: 24 heads x 128, T5 4096, CLIP 768, 64 latent channels;
the Flux VAE; random bf16 values, seeded) is written as a bare transformer folder in several
shards + a VAE folder + a prompt-embeddings file, tensor by tensor so the writer stays small.
Then a fresh child process imports it and reports its peak RSS (ru_maxrss). `baseline_rss_mb`
is the child's RSS after importing torch/diffusers/op4ksr and before the import starts.
Text encoders are not part of this measurement: they are loaded, run once and dropped before
the transformer is copied (T5-XXL in bf16 is 9.5 GB, below the transformer's 24 GB).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def write_synthetic(root: Path, double: int, single: int, shards: int, seed: int = 0) -> int:
    """A bare FLUX.1-dev-width transformer folder (sharded), a Flux VAE folder, prompt embeds; weight bytes."""
    import torch
    from safetensors.torch import save_file

    from op4ksr.importing.components import meta_component
    from op4ksr.tensorfile import write_streaming
    from op4ksr.presets import FLUX_VAE, get_preset
    from op4ksr.transformer import RFRFluxTransformer2DModel
    from op4ksr.vae import F16AutoencoderKL

    config = {**get_preset("flux-dev").transformer.config(), "num_layers": double, "num_single_layers": single}
    transformer = meta_component(RFRFluxTransformer2DModel, config)
    vae = meta_component(F16AutoencoderKL, {**FLUX_VAE.config(), "input_stride": 2})
    generator = torch.Generator().manual_seed(seed)

    def random(shape):
        return (torch.randn(shape, generator=generator) * 0.02).to(torch.bfloat16)

    def write(module, folder: Path, class_name: str, parts: int) -> int:
        folder.mkdir(parents=True)
        shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        public = {**dict(module.config), "_class_name": class_name}
        (folder / "config.json").write_text(json.dumps({k: v for k, v in public.items() if k not in ("rfr_mode", "rfr_scale")}))
        keys = list(shapes)
        groups = [keys[i::parts] for i in range(parts)] if parts > 1 else [keys]
        names = [f"diffusion_pytorch_model-{i + 1:05d}-of-{parts:05d}.safetensors" for i in range(parts)]
        if parts == 1:
            names = ["diffusion_pytorch_model.safetensors"]
        weight_map = {}
        for name, group in zip(names, groups):
            write_streaming(folder / name, [(k, shapes[k], torch.bfloat16) for k in group], lambda k: random(shapes[k]))
            weight_map.update({k: name for k in group})
        if parts > 1:
            (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
        return sum(torch.Size(s).numel() * 2 for s in shapes.values())

    total = write(transformer, root / "transformer", "FluxTransformer2DModel", shards)
    total += write(vae, root / "vae", "AutoencoderKL", 1)
    save_file({"prompt_embeds": random((1, 512, 4096)), "pooled_prompt_embeds": random((1, 768))},
              str(root / "prompt.safetensors"))
    return total


def child(root: Path, mode: str) -> dict:
    """Run one import in this (fresh) process; its peak RSS and timings."""
    import torch  # noqa: F401  (baseline: the libraries an import needs, loaded)

    from op4ksr.checkpoint import load_component, save_component
    from op4ksr.importing import ImportSpec, import_checkpoint
    from op4ksr.transformer import RFRFluxTransformer2DModel

    baseline = _rss_mb()
    start = time.perf_counter()
    if mode == "streaming":
        import_checkpoint(ImportSpec(base=root / "transformer", vae=root / "vae", prompt_embeds=root / "prompt.safetensors",
                                     out=root / "out", dtype="bfloat16", vae_stride=2))
    else:  # what a load-then-save importer would do: the whole transformer in memory, then safetensors' save_file
        model = load_component(RFRFluxTransformer2DModel, root / "transformer", "cpu", torch.bfloat16)
        save_component(model, root / "out-naive" / "transformer")
    return {"seconds": round(time.perf_counter() - start, 2), "baseline_rss_mb": round(baseline, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--double", type=int, default=1, help="double-stream blocks (FLUX.1-dev: 19)")
    parser.add_argument("--single", type=int, default=2, help="single-stream blocks (FLUX.1-dev: 38)")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--mode", choices=["streaming", "naive"], default="streaming")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.child), args.mode)))
        return
    import diffusers
    import torch

    with tempfile.TemporaryDirectory(prefix="op4ksr-bench-import-") as scratch:
        weight_bytes = write_synthetic(Path(scratch), args.double, args.single, args.shards)
        run = subprocess.run([sys.executable, __file__, "--child", scratch, "--mode", args.mode],
                             check=True, capture_output=True, text=True)
        result = json.loads(run.stdout.strip().splitlines()[-1])
    weight_mb = weight_bytes / 2**20
    print(json.dumps({
        "bench": "import", "mode": args.mode, "double_blocks": args.double, "single_blocks": args.single,
        "shards": args.shards, "dtype": "bfloat16", "weight_mb": round(weight_mb, 1), **result,
        "peak_rss_over_weights": round(result["peak_rss_mb"] / weight_mb, 3),
        "peak_above_baseline_over_weights": round((result["peak_rss_mb"] - result["baseline_rss_mb"]) / weight_mb, 3),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__, "diffusers": diffusers.__version__},
    }, indent=2))


if __name__ == "__main__":
    main()
