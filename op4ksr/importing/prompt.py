"""The fixed prompt embeddings, computed once at import as FluxPipeline.encode_prompt computes them.

T5 (`text_encoder_2`) gives the sequence (1, max_sequence_length, 4096) and CLIP (`text_encoder`)
the pooled vector (1, 768). The encoders are loaded from the pipeline folder in the dtype they
are stored in (as `FluxPipeline.from_pretrained(torch_dtype=...)` users run them), safetensors
only, and dropped before the transformer is copied; they are never loaded at inference.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from op4ksr.checkpoint import CheckpointError

# FluxPipeline's model_index.json entries the encoder needs, with the classes it knows how to load
TEXT_PARTS = {"text_encoder": "CLIPTextModel", "tokenizer": "CLIPTokenizer",
              "text_encoder_2": "T5EncoderModel", "tokenizer_2": ("T5TokenizerFast", "T5Tokenizer")}
T5_MAX_TOKENS = 512  # FluxPipeline.check_inputs refuses more


def default_max_sequence_length(guidance_embeds: bool) -> int:
    """FLUX.1-dev (guidance-distilled) was trained with 512 T5 tokens, FLUX.1-schnell with 256."""
    return 512 if guidance_embeds else 256


def check_text_parts(base: Path) -> None:
    """CheckpointError naming the first text-encoder part of a FluxPipeline folder that is missing or unknown."""
    index = json.loads((base / "model_index.json").read_text())
    for part, classes in TEXT_PARTS.items():
        classes = (classes,) if isinstance(classes, str) else classes
        entry = index.get(part) or [None, None]
        if entry[1] not in classes:
            raise CheckpointError(f"{base}/model_index.json: {part} is {entry[1]!r}, expected {' or '.join(classes)}; "
                                  "give a FluxPipeline folder, or a transformer folder with --prompt-embeds")
        if not (base / part).is_dir():
            raise CheckpointError(f"{base}: the '{part}/' folder is missing")


def encode_prompt(base: Path, prompt: str, max_sequence_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt_embeds (1, N, D), pooled (1, P)) in float32 for `prompt`, from a FluxPipeline folder's encoders."""
    from diffusers import FluxPipeline

    from op4ksr.extras import require

    transformers = require("transformers", "import", "encoding the prompt (op4ksr import)")
    CLIPTextModel, CLIPTokenizer = transformers.CLIPTextModel, transformers.CLIPTokenizer
    T5EncoderModel, T5TokenizerFast = transformers.T5EncoderModel, transformers.T5TokenizerFast

    if not 1 <= max_sequence_length <= T5_MAX_TOKENS:
        raise CheckpointError(f"--max-sequence-length {max_sequence_length}: T5 takes 1..{T5_MAX_TOKENS} tokens")
    check_text_parts(base)
    local = dict(local_files_only=True)
    weights = dict(local, use_safetensors=True, dtype="auto")
    pipe = FluxPipeline(
        scheduler=None, vae=None, transformer=None,
        text_encoder=CLIPTextModel.from_pretrained(base / "text_encoder", **weights).eval(),
        tokenizer=CLIPTokenizer.from_pretrained(base / "tokenizer", **local),
        text_encoder_2=T5EncoderModel.from_pretrained(base / "text_encoder_2", **weights).eval(),
        tokenizer_2=T5TokenizerFast.from_pretrained(base / "tokenizer_2", **local),
    )
    with torch.inference_mode():
        embeds, pooled, _ = pipe.encode_prompt(prompt=prompt, prompt_2=None, device=torch.device("cpu"),
                                               num_images_per_prompt=1, max_sequence_length=max_sequence_length)
    return embeds.float().clone(), pooled.float().clone()


def read_prompt_embeds(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt_embeds (1, N, D), pooled (1, P)) from a safetensors file, in our names or diffusers'."""
    from safetensors.torch import load_file

    if path.suffix != ".safetensors" or not path.is_file():
        raise CheckpointError(f"--prompt-embeds {path}: give a .safetensors file (pickled .pt files are refused)")
    tensors = load_file(str(path))
    for seq_name, pooled_name in (("encoder_hidden_states", "pooled"), ("prompt_embeds", "pooled_prompt_embeds")):
        if seq_name in tensors and pooled_name in tensors:
            embeds, pooled = tensors[seq_name].float(), tensors[pooled_name].float()
            return (embeds if embeds.ndim == 3 else embeds[None]), (pooled if pooled.ndim == 2 else pooled[None])
    raise CheckpointError(f"--prompt-embeds {path}: needs tensors encoder_hidden_states + pooled (or prompt_embeds + "
                          f"pooled_prompt_embeds); found {', '.join(sorted(tensors)) or 'none'}")
