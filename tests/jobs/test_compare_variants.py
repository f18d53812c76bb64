"""How `op4ksr compare` reads its variants: compare.variants in a config file, then --variant flags."""
import pytest

from jobs.compare import variants_of
from jobs.config import ConfigError, load_config

VARIANTS_YAML = """\
compare:
  variants:
    - {name: backproject, overrides: [sr.fidelity=backproject]}
    - {name: other-checkpoint, model: /ckpt/step-2000}
"""


def test_variants_come_from_the_config_then_the_flags(tmp_path):
    (tmp_path / "cmp.yaml").write_text(VARIANTS_YAML)
    cfg = load_config([str(tmp_path / "cmp.yaml")])
    variants = variants_of(cfg, ['esrgan peer.kind=spandrel "peer.path=/models/x 4.safetensors"'])
    assert variants == [("backproject", ["sr.fidelity=backproject"]),
                        ("other-checkpoint", ["model.path=/ckpt/step-2000"]),
                        ("esrgan", ["peer.kind=spandrel", "peer.path=/models/x 4.safetensors"])]


@pytest.mark.parametrize("flags", [["only-one"], ["a x=1", "a y=2"], ["bad/name", "b"]])
def test_too_few_repeated_or_unsafe_names_are_refused(flags):
    with pytest.raises(ConfigError, match="two or more"):
        variants_of(load_config([]), flags)


def test_a_variant_entry_with_unknown_keys_is_refused(tmp_path):
    (tmp_path / "bad.yaml").write_text("compare:\n  variants: [{name: a, overide: [x=1]}, {name: b}]\n")
    with pytest.raises(ConfigError, match="name, and model and/or overrides"):
        variants_of(load_config([str(tmp_path / "bad.yaml")]), [])
