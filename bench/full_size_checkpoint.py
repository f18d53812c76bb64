"""A preset-size OP4KSR checkpoint with seeded random weights, written block by block (bench/full_size_cpu.py).

The layout is what `op4ksr import` writes (op4ksr.importing.build): transformer/ and vae/ each a
config.json and one safetensors file in bf16, prompt_embeds.safetensors, model_index.json with
the weights' sha256. Each transformer block is built on the CPU with the modules' own
initialisation (nn.Linear's), written, and dropped before the next, so peak memory is one block
(0.68 GB for flux-dev), not the model (24 GB). The int8 copy goes through the importer's writer.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from op4ksr.checkpoint import WEIGHTS_NAME, meta_component, save_component
from op4ksr.importing.components import copy_component
from op4ksr.tensorfile import write_streaming
from op4ksr.loading import SAVED_OPTIONS
from op4ksr.model import PROMPT_EMBEDS, _default_dtype, write_model_index
from op4ksr.presets import get_preset
from op4ksr.transformer import RFRFluxTransformer2DModel
from op4ksr.vae import F16AutoencoderKL

BLOCK_KEY = re.compile(r"^(transformer_blocks|single_transformer_blocks)\.(\d+)\.")


class _BlockBuilder:
    """tensor_for(key) for write_streaming: builds the block that owns `key` when first asked (seeded)."""

    def __init__(self, preset: str, seed: int, dtype: torch.dtype):
        from diffusers.models.transformers.transformer_flux import FluxSingleTransformerBlock, FluxTransformerBlock

        self.cfg, self.seed, self.dtype = get_preset(preset).transformer.config(), seed, dtype
        self.classes = {"transformer_blocks": FluxTransformerBlock, "single_transformer_blocks": FluxSingleTransformerBlock}
        self.owner, self.state = None, {}

    def _build(self, owner: tuple[str, int] | None) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        torch.manual_seed(self.seed * 1000 + (0 if owner is None else 1 + owner[1] + 100 * (owner[0] == "single_transformer_blocks")))
        with _default_dtype(self.dtype):
            if owner is None:  # everything outside the blocks: the transformer with no blocks
                module = RFRFluxTransformer2DModel(**{**cfg, "num_layers": 0, "num_single_layers": 0})
            else:
                dim = cfg["num_attention_heads"] * cfg["attention_head_dim"]
                module = self.classes[owner[0]](dim, cfg["num_attention_heads"], cfg["attention_head_dim"])
        prefix = "" if owner is None else f"{owner[0]}.{owner[1]}."
        return {prefix + k: v.detach().to(self.dtype) for k, v in module.state_dict().items()}

    def __call__(self, key: str) -> torch.Tensor:
        match = BLOCK_KEY.match(key)
        owner = (match.group(1), int(match.group(2))) if match else None
        if owner != self.owner or key not in self.state:
            self.state = {}  # drop the previous block before building the next
            self.state, self.owner = self._build(owner), owner
        return self.state.pop(key)


def write_random_checkpoint(root: Path, preset: str = "flux-dev", seed: int = 0) -> dict:
    """Write the checkpoint under `root` (must not exist); returns its model_index.json."""
    root = Path(root)
    if root.exists():
        raise FileExistsError(f"{root} exists")
    spec = get_preset(preset)
    transformer = meta_component(RFRFluxTransformer2DModel, spec.transformer.config(), preset)
    (root / "transformer").mkdir(parents=True)
    transformer.save_config(str(root / "transformer"))
    plan = [(k, tuple(v.shape), torch.bfloat16) for k, v in transformer.state_dict().items()]
    # the non-block keys come first and last in state-dict order: group them so each module is built once
    plan.sort(key=lambda p: (0, 0, 0) if not BLOCK_KEY.match(p[0]) else
              (1, BLOCK_KEY.match(p[0]).group(1) == "single_transformer_blocks", int(BLOCK_KEY.match(p[0]).group(2))))
    write_streaming(root / "transformer" / WEIGHTS_NAME, plan, _BlockBuilder(preset, seed, torch.bfloat16),
                    metadata={"format": "pt"})
    torch.manual_seed(seed)
    with _default_dtype(torch.bfloat16):
        vae = F16AutoencoderKL(**spec.vae.config())
    save_component(vae, root / "vae")
    del vae
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    save_file({"encoder_hidden_states": torch.randn(1, spec.prompt_tokens, spec.transformer.joint_attention_dim, generator=g),
               "pooled": torch.randn(1, spec.transformer.pooled_projection_dim, generator=g)}, str(root / PROMPT_EMBEDS))
    return write_model_index(root, name=f"{preset}-random-seed{seed}", timestep=spec.timestep, guidance=spec.guidance,
                             scale=spec.scale, inference=dict(SAVED_OPTIONS),
                             source={"random_weights": {"preset": preset, "seed": seed}, "dtype": "bfloat16"})


def write_int8_copy(source: Path, out: Path) -> dict:
    """The checkpoint at `source` with its transformer written as `op4ksr import --weights int8` writes it;
    the VAE and prompt embeddings hard-linked (same bytes)."""
    source, out = Path(source), Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists")
    from op4ksr.checkpoint import read_config

    meta = meta_component(RFRFluxTransformer2DModel, read_config(source / "transformer"), "transformer")
    copy_component(meta, source / "transformer", out / "transformer", torch.bfloat16, int8=True)
    (out / "vae").mkdir(parents=True)
    for path in (source / "vae").iterdir():
        os.link(path, out / "vae" / path.name)
    os.link(source / PROMPT_EMBEDS, out / PROMPT_EMBEDS)
    import json

    index = json.loads((source / "model_index.json").read_text())
    return write_model_index(out, name=index["name"] + "-int8", timestep=index["timestep"], guidance=index["guidance"],
                             scale=index["scale"], inference=index["inference"],
                             source=index["source"], weights="int8")
