import math

import pytest
import torch
from diffusers import FluxTransformer2DModel
from diffusers.models.transformers.transformer_flux import FluxPosEmbed

from op4ksr.model import image_ids
from op4ksr.presets import get_preset
from op4ksr.rope import RFRPosEmbed, rfr_axis_thetas, rope_frequencies
from op4ksr.transformer import RFRFluxTransformer2DModel
from tests.tolerance import FORWARD_ATOL, assert_forwards_close

TINY = get_preset("tiny").transformer.config()


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = image_ids(3, 4)
    return dict(hidden_states=torch.randn(1, 12, 64, generator=g),
                encoder_hidden_states=torch.randn(1, 5, TINY["joint_attention_dim"], generator=g),
                pooled_projections=torch.randn(1, TINY["pooled_projection_dim"], generator=g),
                timestep=torch.tensor([0.7]), guidance=torch.tensor([1.0]), img_ids=ids, txt_ids=torch.zeros(5, 3))


def test_scale_one_equals_stock_diffusers():
    torch.manual_seed(0)
    stock = FluxTransformer2DModel(**TINY).eval()
    for mode in ("none", "base", "ntk"):
        ours = RFRFluxTransformer2DModel(**TINY, rfr_mode=mode, rfr_scale=1.0).eval()
        ours.load_state_dict(stock.state_dict())
        with torch.no_grad():
            # the same arithmetic as stock; two model objects, so within the stated tolerance
            assert_forwards_close(ours(**_inputs()).sample, stock(**_inputs()).sample)


@pytest.mark.parametrize("mode,scale", [("base", 4.0), ("base", 0.5), ("ntk", 3.0)])
def test_spatial_frequencies_are_those_of_the_rescaled_base(mode, scale):
    axes = TINY["axes_dims_rope"]
    thetas = rfr_axis_thetas(10000.0, axes, mode, scale)
    expect = 10000.0 * scale if mode == "base" else 10000.0 * scale ** (axes[1] / (axes[1] - 2))
    assert thetas[0] == 10000.0 and math.isclose(thetas[1], expect) and math.isclose(thetas[2], expect)
    ids = image_ids(5, 7)
    cos, sin = RFRPosEmbed(thetas, axes)(ids)
    # column axis: angles = col * theta ** (-2i/d), each frequency repeated twice (interleaved real pairs)
    d0, d1, d2 = axes
    freqs = rope_frequencies(d2, thetas[2])
    angles = ids[:, 2:3].double() * freqs[None]
    assert torch.allclose(cos[:, d0 + d1:].double(), torch.cos(angles).repeat_interleave(2, dim=1).float().double(), atol=1e-6)
    assert torch.allclose(sin[:, d0 + d1:].double(), torch.sin(angles).repeat_interleave(2, dim=1).float().double(), atol=1e-6)
    # and identical to stock FluxPosEmbed built with the rescaled base, on the spatial axes
    stock_cos, _ = FluxPosEmbed(theta=thetas[1], axes_dim=list(axes))(ids)
    assert torch.equal(cos[:, d0:], stock_cos[:, d0:])


def test_rfr_changes_the_output_and_survives_save_load(tmp_path):
    torch.manual_seed(0)
    model = RFRFluxTransformer2DModel(**TINY, rfr_mode="base", rfr_scale=4.0).eval()
    plain = RFRFluxTransformer2DModel(**TINY).eval()
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert (model(**_inputs()).sample - plain(**_inputs()).sample).abs().max() > 100 * FORWARD_ATOL
    model.save_pretrained(tmp_path)
    again = RFRFluxTransformer2DModel.from_pretrained(tmp_path)
    assert (again.config.rfr_mode, again.config.rfr_scale) == ("base", 4.0)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())
    with torch.no_grad():
        assert_forwards_close(again(**_inputs()).sample, model(**_inputs()).sample)


def test_bad_rfr_settings_are_refused():
    with pytest.raises(ValueError, match="rfr_mode"):
        rfr_axis_thetas(10000.0, (4, 6, 6), "linear", 2.0)
    with pytest.raises(ValueError, match="positive"):
        rfr_axis_thetas(10000.0, (4, 6, 6), "base", 0.0)
