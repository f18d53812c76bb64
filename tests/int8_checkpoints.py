"""tiny-trained stored as `op4ksr import --weights int8` stores it, for the tests of model.weights=int8."""
import os

import torch

from op4ksr.importing.components import copy_component, meta_component, read_public_config
from op4ksr.model import PROMPT_EMBEDS, write_model_index
from op4ksr.presets import SHIPPED_CHECKPOINTS
from op4ksr.transformer import RFRFluxTransformer2DModel

TINY = SHIPPED_CHECKPOINTS["tiny-trained"]


def write_int8_tiny(out, inference: dict):
    """`out`: the VAE and prompt linked from tiny-trained, the transformer's block Linears as int8 + scales,
    and `inference` as the saved inference options."""
    (out / "vae").mkdir(parents=True)
    for path in (TINY / "vae").iterdir():
        os.link(path, out / "vae" / path.name)
    os.link(TINY / PROMPT_EMBEDS, out / PROMPT_EMBEDS)
    meta = meta_component(RFRFluxTransformer2DModel, read_public_config(TINY / "transformer", "RFRFluxTransformer2DModel"))
    copy_component(meta, TINY / "transformer", out / "transformer", torch.float32, int8=True)
    write_model_index(out, name="tiny-int8", timestep=1.0, guidance=1.0, scale=4, inference=inference, weights="int8")
    return out
