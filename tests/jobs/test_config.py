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
    h100 = load_config([], ["sr.max_output_megapixels=auto", "model.path=", "model.preset=flux-dev",
                            "model.dtype=bfloat16", "sr.device_memory_gb=80"])
    assert max_output_megapixels(h100, gpu_actors=True) == load_plan("flux-dev", "bfloat16").max_output_megapixels(80)
    with pytest.raises(ConfigError, match="set sr.device_memory_gb"):
        max_output_megapixels(load_config([], ["sr.max_output_megapixels=auto"]), gpu_actors=True)
    with pytest.raises(ConfigError, match="sr.max_output_megapixels='big' must be a number or auto"):
        load_config([], ["sr.max_output_megapixels=big"])


def test_inference_overrides_reach_the_resolved_options_and_the_params_hash():
    from jobs.specs import model_spec, output_params
    from op4ksr.loading import resolved_options
    from pipeline.manifest.records import params_hash

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


def _flux_dev_sized_configs(folder):
    """A checkpoint folder with FLUX.1-dev's component configs and no weights: all the planner reads."""
    import json

    from op4ksr.model import OP4KSR

    model = OP4KSR.from_preset("flux-dev", device="meta")
    for part in ("transformer", "vae"):
        getattr(model, part).save_config(str(folder / part))
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "OP4KSR", "model_id": "dev-sized@0"}))
    return folder


def test_auto_plans_for_the_checkpoint_that_is_loaded_not_for_model_preset(tmp_path):
    """model.preset stays `tiny` (the default); model.path names a FLUX.1-dev-sized checkpoint:
    `auto` plans for the checkpoint, from its configs alone (no weights on disk)."""
    from jobs.specs import build_run_spec, max_output_megapixels
    from op4ksr.inference.memory_plan import load_plan

    model = _flux_dev_sized_configs(tmp_path / "dev")
    flux_dev = load_plan("flux-dev", "bfloat16").max_output_megapixels(80)
    tiny = load_plan("tiny", "bfloat16").max_output_megapixels(80)
    cfg = load_config([], ["sr.max_output_megapixels=auto", f"model.path={model}", "model.dtype=bfloat16",
                           "sr.device_memory_gb=80", f"input.uri={tmp_path / 'in'}", f"output.uri={tmp_path / 'out'}"])
    assert cfg.model.preset == "tiny" and flux_dev < tiny
    assert max_output_megapixels(cfg) == flux_dev
    assert build_run_spec(cfg, "r", "").size.max_megapixels == flux_dev
    with pytest.raises(Exception, match="the model in bfloat16 does not fit a 16 GB GPU"):
        max_output_megapixels(load_config([], ["sr.max_output_megapixels=auto", f"model.path={model}",
                                               "model.dtype=bfloat16", "sr.device_memory_gb=16"]))
    # a checkpoint of no preset's sizes gets its own analytic plan
    (model / "transformer" / "config.json").write_text((model / "transformer" / "config.json").read_text()
                                                       .replace('"num_single_layers": 38', '"num_single_layers": 10'))
    assert flux_dev < max_output_megapixels(cfg) < tiny


@pytest.mark.parametrize("override,message", [
    ("sr.fidelity_strength=1.5", "sr.fidelity_strength=1.5 must be at most 1 (within 0..1)"),
    ("sr.fidelity_levels=2.5", "sr.fidelity_levels=2.5 must be a whole number (it is not rounded)"),
    ("sr.fidelity_iterations=0", "sr.fidelity_iterations=0 must be at least 1"),
    ("output.quality=92.5", "output.quality=92.5 must be a whole number"),
    ("output.quality=101", "output.quality=101 must be at most 100 (within 1..100)"),
    ("model.device=gpu", "model.device='gpu' is not one of auto, cpu, cuda, cuda:N, mps"),
    ("actors.batch_size=true", "actors.batch_size=True must be a whole number"),
    ("storage.embedded=maybe", "storage.embedded='maybe' must be true or false"),
    ("rfr.scale=-2", "rfr.scale=-2 must be positive"),
    ("sr.scale=0", "sr.scale=0 must be positive"),
    ("report.max_lag_multiple=0", "report.max_lag_multiple=0 must be at least 1"),
    ("model.vae_decode_partitions=1.5", "model.vae_decode_partitions=1.5 must be a whole number"),
    ("input.extensions=.png", "input.extensions='.png' must be a list"),
    ("degrade.sinc_prob=2", "degrade.sinc_prob=2 must be at most 1"),
])
def test_a_bad_value_stops_backfill_in_one_line_before_anything_is_listed(tmp_path, capsys, override, message):
    """Checked when the config loads: the run lists nothing, writes nothing, and no actor sees the value."""
    from jobs.cli import main as cli

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(b"never read")
    assert cli(["backfill", f"input.uri={tmp_path / 'in'}", f"output.uri={tmp_path / 'out'}", override]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"op4ksr backfill: {message}" or (err.startswith(f"op4ksr backfill: {message}") and "\n" not in err)
    assert not (tmp_path / "out").exists()


def test_every_key_has_a_rule_and_every_rule_a_key():
    from jobs.config import _defaults
    from jobs.config_rules import RULES, rule_for

    defaults = _defaults()
    assert [k for k in RULES if k not in defaults] == []  # a rule for a key that does not exist is a typo
    assert [k for k, v in defaults.items() if rule_for(k, v) is None] == []  # null defaults need a rule
    for key, value in defaults.items():  # every default passes its own rule
        assert rule_for(key, value).problem(value) == "", key


def test_numbers_for_number_keys_whole_numbers_for_whole_ones():
    cfg = load_config([], ["sr.scale=2", "actors.num_gpus=0.5", "train.cpus_per_worker=0.5", "sr.fidelity_strength=1",
                           "run.id=20260501", "sr.max_output_megapixels=auto"])
    assert (cfg.sr.scale, cfg.actors.num_gpus, cfg.sr.fidelity_strength) == (2, 0.5, 1)


def test_a_named_price_set_is_checked_as_the_prices_are():
    from jobs.specs import prices_from_config

    with pytest.raises(ConfigError, match=r"^cost.presets.mine.gpu_hour_usd='cheap' must be a number$"):
        prices_from_config(load_config([], ["cost.presets.mine.gpu_hour_usd=cheap", "cost.preset=mine"]))
    with pytest.raises(ConfigError, match=r"^cost.presets.mine.put_per_1k=-1 must be 0 or more$"):
        prices_from_config(load_config([], ["cost.presets.mine.put_per_1k=-1", "cost.preset=mine"]))


def test_a_keys_choices_are_the_specs_literal_and_what_the_library_takes():
    from typing import get_args

    import op4ksr.fidelity
    import op4ksr.model
    import op4ksr.rope
    from jobs.config_rules import RULES
    from op4ksr.images.formats import FORMATS
    from op4ksr.loading import DType, FidelityMode, RFRMode

    for key, literal, library in (("rfr.mode", RFRMode, op4ksr.rope.RFR_MODES),
                                  ("sr.fidelity", FidelityMode, op4ksr.fidelity.MODES),
                                  ("model.dtype", DType, tuple(op4ksr.model.DTYPES))):
        assert RULES[key].choices == get_args(literal) == tuple(library), key
    assert RULES["output.format"].choices == tuple(FORMATS)
    with pytest.raises(ConfigError, match="rfr.mode='spiral' is not one of none, base, ntk"):
        load_config([], ["rfr.mode=spiral"])
