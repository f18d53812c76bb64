"""model.weights and model.offload: checked when the config loads or before listing, and in params_hash as they should be."""
import pytest

from jobs.config import ConfigError, load_config
from tests.int8_checkpoints import write_int8_tiny


@pytest.mark.parametrize("override,message", [("model.weights=int4", "model.weights='int4' is not one of"),
                                              ("model.offload=disk", "model.offload='disk' is not one of")])
def test_bad_values_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config([], [override])


def test_an_int8_checkpoint_run_as_dtype_stops_in_one_line_before_listing(tmp_path, capsys):
    from jobs.cli import main as cli

    model = write_int8_tiny(tmp_path / "tiny-int8", inference={})
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(b"never read")
    args = ["backfill", f"input.uri={tmp_path / 'in'}", f"output.uri={tmp_path / 'out'}", f"model.path={model}"]
    assert cli(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("op4ksr backfill: model.weights=dtype: model ") and "\n" not in err
    assert err.endswith("is stored in int8; set model.weights=int8")
    assert not (tmp_path / "out").exists()


def test_weights_change_the_params_hash_and_offload_does_not():
    from jobs.specs import model_spec, output_params
    from op4ksr.loading import resolved_options
    from pipeline.manifest.records import params_hash

    def digest(*overrides):
        cfg = load_config([], list(overrides))
        return params_hash(output_params(cfg, resolved_options(model_spec(cfg))))

    plain = digest()
    assert digest("model.offload=blocks") == plain  # the same pixels (tests/op4ksr/test_offload.py)
    assert digest("model.weights=int8") != plain
    assert model_spec(load_config([], ["model.weights=int8", "model.offload=blocks"])).offload == "blocks"
