"""Tiny public-format Flux checkpoints built offline, the way diffusers' own Flux tests build theirs.

A FluxPipeline with tiny CLIP / T5 encoders and hand-made tokenizers (no hub), a stride-2
("F16", UltraFlux-style) VAE folder, and LoRA adapters in the diffusers, peft and OMGSR layouts.
Everything is seeded, so two calls give the same bytes.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

# sizes: transformer in_channels = 4 x VAE latent_channels; RoPE axes sum to attention_head_dim
TRANSFORMER = dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
                   num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True,
                   axes_dims_rope=(4, 6, 6))
VAE = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
           up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
           latent_channels=4, norm_num_groups=4, sample_size=32, scaling_factor=0.3611, shift_factor=0.1159,
           use_quant_conv=False, use_post_quant_conv=False)
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def clip_tokenizer(folder: Path):
    """A CLIPTokenizer from a hand-written byte-level BPE vocabulary (letters, words end in </w>)."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    tokens = ["<|startoftext|>", "<|endoftext|>"] + list(LETTERS) + [f"{c}</w>" for c in LETTERS]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)


def t5_tokenizer():
    """A T5TokenizerFast over a Unigram list of letters (transformers 5.x takes (piece, score) pairs)."""
    from transformers import T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)] + [(c, -2.0) for c in LETTERS]
    return T5TokenizerFast(vocab=vocab, eos_token="</s>", unk_token="<unk>", pad_token="<pad>", extra_ids=0,
                           model_max_length=512)


def flux_pipeline(scratch: Path, seed: int = 0):
    """A tiny FluxPipeline (guidance-distilled like FLUX.1-dev) with random weights."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(seed)
    clip = CLIPTextModel(CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32,
                                        intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                                        vocab_size=64, projection_dim=32, max_position_embeddings=77))
    t5 = T5EncoderModel(T5Config(vocab_size=32, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                                 pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    return FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=AutoencoderKL(**VAE),
                        text_encoder=clip.eval(), tokenizer=clip_tokenizer(scratch / "clip-vocab"),
                        text_encoder_2=t5.eval(), tokenizer_2=t5_tokenizer(),
                        transformer=FluxTransformer2DModel(**TRANSFORMER).eval())


def save_pipeline(folder: Path, seed: int = 0):
    """The tiny pipeline saved as a FluxPipeline folder (safetensors); returns the pipeline."""
    pipe = flux_pipeline(folder.parent / f".{folder.name}-scratch", seed)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return pipe


def save_f16_vae(folder: Path, seed: int = 1):
    """An AutoencoderKL folder with UltraFlux's extra config key "stride": 2; returns the stock 8x module."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(**VAE).eval()
    vae.save_pretrained(str(folder), safe_serialization=True)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "stride": 2}, indent=2))
    return vae


def lora_config(rank: int, alpha: int, targets: list[str]):
    from peft import LoraConfig

    # init_lora_weights=False: lora_B random too, so the update is not zero
    return LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, init_lora_weights=False)


TRANSFORMER_TARGETS = ["x_embedder", "attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj",
                       "ff.net.2", "proj_mlp"]
VAE_ENCODER_TARGETS = ["conv1", "conv2", "conv_in", "conv", "conv_out", "to_q", "to_v"]  # OMGSR's kind of list


def save_diffusers_lora(folder: Path, transformer, rank: int = 4, alpha: int = 8, seed: int = 2) -> None:
    """pytorch_lora_weights.safetensors written by FluxPipeline.save_lora_weights, with its LoRA config."""
    import copy

    from diffusers import FluxPipeline
    from peft import get_peft_model_state_dict, inject_adapter_in_model

    torch.manual_seed(seed)
    config = lora_config(rank, alpha, TRANSFORMER_TARGETS)
    model = inject_adapter_in_model(config, copy.deepcopy(transformer))
    FluxPipeline.save_lora_weights(str(folder), transformer_lora_layers=get_peft_model_state_dict(model),
                                   transformer_lora_adapter_metadata=config.to_dict())


def save_omgsr_lora(folder: Path, transformer, vae, rank: int = 4, seed: int = 3) -> None:
    """OMGSR-F's layout: peft adapters flux_adapter/ (transformer) and vae_encoder_adapter/ (vae.encoder)."""
    import copy

    from peft import PeftModel

    torch.manual_seed(seed)
    PeftModel(copy.deepcopy(transformer), lora_config(rank, rank, TRANSFORMER_TARGETS),
              adapter_name="flux_adapter").save_pretrained(str(folder))
    PeftModel(copy.deepcopy(vae.encoder), lora_config(rank, 2 * rank, VAE_ENCODER_TARGETS),
              adapter_name="vae_encoder_adapter").save_pretrained(str(folder))
