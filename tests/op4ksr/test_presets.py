"""A preset's transformer and VAE sizes are typed params, checked once when they are written."""
import dataclasses

import pytest

from op4ksr.model import OP4KSR
from op4ksr.presets import PRESETS, TransformerParams, VAEParams


def _plain(value):
    return list(value) if isinstance(value, tuple) else value  # a diffusers config keeps lists or tuples


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_a_preset_builds_the_components_its_params_name(name):
    preset = PRESETS[name]
    model = OP4KSR.from_preset(name, device="meta")
    for params, component in ((preset.transformer, model.transformer), (preset.vae, model.vae)):
        assert {k: _plain(component.config[k]) for k in params.config()} == \
            {k: _plain(v) for k, v in params.config().items()}
    assert model.token_period_px == preset.vae.factor * 2
    assert model.prompt_embeds.shape[-1] == preset.transformer.joint_attention_dim


@pytest.mark.parametrize("change, word", [
    ({"axes_dims_rope": (4, 6, 8)}, "axes_dims_rope"),  # 18 != the head's 16
    ({"axes_dims_rope": (5, 5, 6)}, "axes_dims_rope"),  # odd
    ({"num_attention_heads": 0}, "num_attention_heads"),
    ({"num_single_layers": -1}, "num_single_layers"),
])
def test_bad_transformer_params_name_the_field(change, word):
    with pytest.raises(ValueError, match=word):
        dataclasses.replace(PRESETS["tiny"].transformer, **change)


@pytest.mark.parametrize("change, word", [
    ({"block_out_channels": (32, 40)}, "block_out_channels"),  # 40 is no multiple of 16 groups
    ({"input_stride": 4}, "input_stride"),
    ({"latent_channels": 0}, "latent_channels"),
])
def test_bad_vae_params_name_the_field(change, word):
    with pytest.raises(ValueError, match=word):
        dataclasses.replace(PRESETS["tiny"].vae, **change)


def test_params_are_keyword_only():
    with pytest.raises(TypeError):
        TransformerParams(1, 1, 16, 2, 32, 32, True, (4, 6, 6))  # noqa: the positional call a reader must decode
    with pytest.raises(TypeError):
        VAEParams((32,), 1, 16, 16, 1.0, 0.0, False, False, True, 2)
