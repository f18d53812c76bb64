"""`op4ksr.importing`: tiny public-format Flux checkpoints -> OP4KSR checkpoints, compared with stock diffusers."""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from op4ksr.checkpoint import CheckpointError, load_state_dict
from op4ksr.importing import ImportSpec, LoraError, import_checkpoint
from op4ksr.importing.lora import read_lora
from op4ksr.loading import SAVED_OPTIONS
from op4ksr.model import OP4KSR
from tests import public_flux
from tests.tolerance import assert_forwards_close


@pytest.fixture(scope="module")
def public(tmp_path_factory, one_torch_thread):
    """A tiny FluxPipeline folder, a stride-2 VAE, a diffusers LoRA and an OMGSR-style LoRA folder."""
    root = tmp_path_factory.mktemp("public")
    pipe = public_flux.save_pipeline(root / "FLUX.1-tiny")
    public_flux.save_f16_vae(root / "vae-f16")
    public_flux.save_diffusers_lora(root / "lora-diffusers", pipe.transformer)
    public_flux.save_omgsr_lora(root / "lora-omgsr", pipe.transformer, pipe.vae)
    return root, pipe


@torch.no_grad()  # as FluxPipeline.__call__ runs it: with autograd on, CPU SDPA takes another path (~1e-5 apart)
def _encode(pipe, prompt: str, length: int):
    return pipe.encode_prompt(prompt, prompt_2=None, max_sequence_length=length)[:2]


def _import(root: Path, out: str, **kwargs) -> tuple[dict, OP4KSR]:
    spec = ImportSpec(base=root / "FLUX.1-tiny", out=root / out, dtype=kwargs.pop("dtype", "float32"), **kwargs)
    index = import_checkpoint(spec)
    return index, OP4KSR.from_pretrained(root / out)


def _transformer_inputs(seed=0, tokens=12, text=7):
    g = torch.Generator().manual_seed(seed)
    cfg = public_flux.TRANSFORMER
    return dict(hidden_states=torch.randn(1, tokens, cfg["in_channels"], generator=g),
                encoder_hidden_states=torch.randn(1, text, cfg["joint_attention_dim"], generator=g),
                pooled_projections=torch.randn(1, cfg["pooled_projection_dim"], generator=g),
                timestep=torch.tensor([0.6]), guidance=torch.tensor([2.0]),
                img_ids=torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(3.0), torch.arange(4.0), indexing="ij"),
                                    -1).reshape(-1, 3),
                txt_ids=torch.zeros(text, 3), return_dict=False)


@torch.inference_mode()
def _same_transformer_output(ours, stock):
    inputs = _transformer_inputs()
    assert_forwards_close(ours(**inputs)[0], stock(**inputs)[0])


def test_pipeline_folder_imports_with_encode_prompt_embeddings_and_stock_transformer(public):
    from diffusers import FluxTransformer2DModel

    root, pipe = public
    index, model = _import(root, "plain")
    assert index["source"]["base_kind"] == "pipeline" and index["source"]["max_sequence_length"] == 512
    assert index["inference"] == SAVED_OPTIONS  # every inference option saved, at the defaults (no RFR, no shift, ...)
    embeds, pooled = _encode(pipe, "", 512)
    assert model.prompt_embeds.shape == (1, 512, 32)  # T5 at 512 tokens: the transformer has guidance embeddings
    assert_forwards_close(model.prompt_embeds, embeds)
    assert_forwards_close(model.pooled_embeds, pooled)
    stock = FluxTransformer2DModel.from_pretrained(root / "FLUX.1-tiny" / "transformer").eval()
    ours = {k: v for k, v in model.transformer.state_dict().items()}
    assert ours.keys() == stock.state_dict().keys()
    assert all(torch.equal(ours[k], v) for k, v in stock.state_dict().items())  # float32 import: bit for bit
    _same_transformer_output(model.transformer, stock)
    assert model.vae_factor == 8 // 4  # the pipeline's own VAE has no "stride": the stock 8x layout (2 levels here)


def test_prompt_and_sequence_length_are_encoded_as_flux_does(public):
    root, pipe = public
    _, model = _import(root, "prompted", prompt="a cat", max_sequence_length=64)
    embeds, pooled = _encode(pipe, "a cat", 64)
    assert model.prompt_embeds.shape == (1, 64, 32)
    assert_forwards_close(model.prompt_embeds, embeds)
    assert_forwards_close(model.pooled_embeds, pooled)
    empty = _encode(pipe, "", 64)[0]
    assert (model.prompt_embeds - empty).abs().max() > 1e-3  # the prompt was used


def test_same_inputs_same_weights_sha256_and_bf16_is_the_rounded_weights(public):
    root, pipe = public
    a, _ = _import(root, "again-1", dtype="bfloat16")
    b, _ = _import(root, "again-2", dtype="bfloat16")
    assert a["weights_sha256"] == b["weights_sha256"] and a["model_id"] == b["model_id"]
    saved = load_state_dict(root / "again-1" / "transformer")
    stock = pipe.transformer.state_dict()
    assert all(saved[k].dtype == torch.bfloat16 and torch.equal(saved[k], v.to(torch.bfloat16)) for k, v in stock.items())


def test_a_sharded_transformer_streams_into_the_same_weights(public, tmp_path):
    import shutil

    root, pipe = public
    sharded = tmp_path / "sharded"
    shutil.copytree(root / "FLUX.1-tiny", sharded)
    shutil.rmtree(sharded / "transformer")
    pipe.transformer.save_pretrained(str(sharded / "transformer"), max_shard_size="20KB")
    assert len(list((sharded / "transformer").glob("*.safetensors"))) > 3
    import_checkpoint(ImportSpec(base=sharded, out=tmp_path / "out", dtype="float32"))
    saved = load_state_dict(tmp_path / "out" / "transformer")
    assert all(torch.equal(saved[k], v) for k, v in pipe.transformer.state_dict().items())


def test_diffusers_lora_merges_as_load_lora_weights_then_fuse_lora(public):
    from diffusers import FluxPipeline

    root, _ = public
    index, model = _import(root, "with-lora", loras=(root / "lora-diffusers",))
    lora = index["source"]["loras"][0]
    assert (lora["format"], lora["target"], lora["ranks"], lora["scales"]) == ("diffusers", "transformer", [4], [2.0])
    stock = FluxPipeline.from_pretrained(root / "FLUX.1-tiny")
    before = stock.transformer.x_embedder.weight.detach().clone()
    stock.load_lora_weights(str(root / "lora-diffusers"))
    stock.fuse_lora()
    assert (stock.transformer.x_embedder.weight - before).abs().max() > 1e-2  # the LoRA changes the weights
    _same_transformer_output(model.transformer, stock.transformer.eval())


def test_omgsr_lora_merges_into_transformer_and_vae_encoder_as_peft_does(public):
    import copy

    from peft import PeftModel

    root, pipe = public
    index, model = _import(root, "omgsr", loras=(root / "lora-omgsr",))
    assert [(l["format"], l["target"], l["scales"]) for l in index["source"]["loras"]] == [
        ("omgsr", "transformer", [1.0]), ("omgsr", "vae.encoder", [2.0])]
    flux_adapter = root / "lora-omgsr" / "flux_adapter"
    for path in (flux_adapter, flux_adapter / "adapter_model.safetensors"):  # a plain peft adapter: the transformer
        (peft,) = read_lora(path)
        assert (peft.format, peft.target) == ("peft", "transformer") and len(peft.pairs) == index["source"]["loras"][0]["modules"]
    # OMGSR's own loading (infer/omgsr_f_infer_model.py): PeftModel.from_pretrained + merge_and_unload
    transformer = PeftModel.from_pretrained(copy.deepcopy(pipe.transformer), root / "lora-omgsr" / "flux_adapter")
    _same_transformer_output(model.transformer, transformer.merge_and_unload().eval())
    vae = copy.deepcopy(pipe.vae)
    vae.encoder = PeftModel.from_pretrained(vae.encoder, root / "lora-omgsr" / "vae_encoder_adapter").merge_and_unload()
    x = torch.rand(1, 3, 16, 24, generator=torch.Generator().manual_seed(4)) * 2 - 1
    with torch.inference_mode():
        assert_forwards_close(model.vae.encode(x).latent_dist.mode(), vae.encode(x).latent_dist.mode())
        assert (model.vae.encode(x).latent_dist.mode() - pipe.vae.encode(x).latent_dist.mode()).abs().max() > 1e-3


def test_mismatching_and_unknown_loras_are_refused_naming_the_problem(public, tmp_path):
    from diffusers import FluxTransformer2DModel

    root, _ = public
    wider = FluxTransformer2DModel(**{**public_flux.TRANSFORMER, "num_attention_heads": 3})
    public_flux.save_diffusers_lora(tmp_path / "wider", wider)
    with pytest.raises(LoraError, match=r"module 'single_transformer_blocks.0.attn.to_k' gives a \(48, 48\) update"):
        import_checkpoint(ImportSpec(base=root / "FLUX.1-tiny", out=tmp_path / "o1", loras=(tmp_path / "wider",)))
    deeper = FluxTransformer2DModel(**{**public_flux.TRANSFORMER, "num_layers": 2})
    public_flux.save_diffusers_lora(tmp_path / "deeper", deeper)
    with pytest.raises(LoraError, match=r"module 'transformer_blocks.1.attn.add_q_proj' is not in the base transformer"):
        import_checkpoint(ImportSpec(base=root / "FLUX.1-tiny", out=tmp_path / "o2", loras=(tmp_path / "deeper",)))
    save_file({"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": torch.zeros(4, 32)}, str(tmp_path / "k.safetensors"))
    with pytest.raises(LoraError, match=r"known formats: diffusers .*peft .*omgsr"):
        import_checkpoint(ImportSpec(base=root / "FLUX.1-tiny", out=tmp_path / "o3", loras=(tmp_path / "k.safetensors",)))
    (tmp_path / "a.bin").write_bytes(b"pickle")
    with pytest.raises(LoraError, match="pickled weights are refused"):
        import_checkpoint(ImportSpec(base=root / "FLUX.1-tiny", out=tmp_path / "o4", loras=(tmp_path / "a.bin",)))
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 5))  # refused before anything was written


def test_bare_transformer_with_prompt_embeds_and_refusals(public, tmp_path):
    root, pipe = public
    base = root / "FLUX.1-tiny"
    with pytest.raises(CheckpointError, match="bare transformer folder: give --vae and --prompt-embeds"):
        import_checkpoint(ImportSpec(base=base / "transformer", out=tmp_path / "o"))
    embeds, pooled = torch.randn(1, 9, 32), torch.randn(1, 32)
    save_file({"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}, str(tmp_path / "p.safetensors"))
    index = import_checkpoint(ImportSpec(base=base / "transformer", out=tmp_path / "bare", vae=root / "vae-f16",
                                         prompt_embeds=tmp_path / "p.safetensors", name="bare"))
    assert index["source"]["base_kind"] == "transformer" and index["model_id"].startswith("bare@")
    saved = load_file(str(tmp_path / "bare" / "prompt_embeds.safetensors"))
    assert torch.equal(saved["encoder_hidden_states"], embeds) and torch.equal(saved["pooled"], pooled)
    with pytest.raises(CheckpointError, match="not empty"):
        import_checkpoint(ImportSpec(base=base, out=tmp_path / "bare"))
    (tmp_path / "notflux").mkdir()
    (tmp_path / "notflux" / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(CheckpointError, match="give a FluxPipeline folder"):
        import_checkpoint(ImportSpec(base=tmp_path / "notflux", out=tmp_path / "o5"))
