import pytest

from jobs.config import ConfigError, load_config, to_yaml


def test_files_and_overrides_merge_in_order():
    cfg = load_config(["demo"], ["sr.scale=2", "output.format=webp"])
    assert cfg.storage.embedded is True and cfg.sr.scale == 2 and cfg.output.format == "webp"
    assert "embedded: true" in to_yaml(cfg)


@pytest.mark.parametrize("override,message", [
    ("sr.scael=2", "did you mean 'sr.scale'"),
    ("output.format=gif", "output.format='gif' is not one of"),
    ("model.dtype=fp8", "model.dtype"),
    ("actors.batch_size=0", "actors.batch_size=0"),
    ("srscale", "must look like key=value"),
])
def test_bad_values_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config([], [override])


def test_unknown_key_in_a_file_is_rejected(tmp_path):
    (tmp_path / "bad.yaml").write_text("modle:\n  preset: tiny\n")
    with pytest.raises(ConfigError, match="unknown config key 'modle.preset'.*did you mean 'model.preset'"):
        load_config([str(tmp_path / "bad.yaml")])


def test_missing_config_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config(["does-not-exist"])


def test_max_output_megapixels_auto_plans_or_says_what_is_missing():
    from jobs.specs import max_output_megapixels
    from op4ksr.inference.memory_plan import load_plan

    on_cpu = load_config([], ["sr.max_output_megapixels=auto", "model.device=cpu"])
    assert max_output_megapixels(on_cpu) == 40.0  # CPU: the fixed limit
    h100 = load_config([], ["sr.max_output_megapixels=auto", "model.preset=flux-dev", "model.dtype=bfloat16",
                            "sr.device_memory_gb=80"])
    assert max_output_megapixels(h100, gpu_actors=True) == load_plan("flux-dev", "bfloat16").max_output_megapixels(80)
    with pytest.raises(ConfigError, match="set sr.device_memory_gb"):
        max_output_megapixels(load_config([], ["sr.max_output_megapixels=auto"]), gpu_actors=True)
    with pytest.raises(ConfigError, match="sr.max_output_megapixels='big' must be a number or auto"):
        load_config([], ["sr.max_output_megapixels=big"])


def test_inference_overrides_reach_the_resolved_options_and_the_params_hash():
    from jobs.specs import model_spec, output_params
    from op4ksr.loading import resolved_options
    from pipeline.run.records import params_hash

    plain = load_config()
    shifted = load_config([], ["model.decode_shift=true", "rfr.mode=base", "rfr.scale=2"])
    saved, wanted = resolved_options(model_spec(plain)), resolved_options(model_spec(shifted))
    assert saved["decode_shift"] is False and saved["rfr_mode"] == "none"  # tiny-trained's saved values
    assert (wanted["decode_shift"], wanted["rfr_mode"], wanted["rfr_scale"]) == (True, "base", 2.0)
    assert params_hash(output_params(plain, saved)) != params_hash(output_params(shifted, wanted))


def test_fidelity_keys_override_the_checkpoint_and_bad_modes_are_named():
    from jobs.specs import model_spec
    from op4ksr.loading import load_model, resolved_options

    saved = resolved_options(model_spec(load_config()))
    assert saved["fidelity"] == "backproject"  # the shipped checkpoint's saved default (docs/QUALITY.md)
    cfg = load_config([], ["sr.fidelity=wavelet", "sr.fidelity_levels=2", "sr.fidelity_strength=0.5"])
    assert resolved_options(model_spec(cfg))["fidelity"] == "wavelet"
    fid = load_model(model_spec(cfg)).fidelity
    assert (fid.mode, fid.levels, fid.strength) == ("wavelet", 2, 0.5)
    with pytest.raises(ConfigError, match="sr.fidelity='sharpen' is not one of"):
        load_config([], ["sr.fidelity=sharpen"])
