"""`op4ksr compare` checks every variant before it runs any (issue 27, item 2): a typo in the last
variant, a variant that changes what all share, a malformed compare.variants or --variant: one line,
nothing listed, started or written."""
import numpy as np
import pytest
from PIL import Image

from jobs.cli import main as cli


@pytest.fixture
def scans(tmp_path):
    (tmp_path / "scans").mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "scans" / "a.png")
    return tmp_path


CASES = [
    (["--variant", "a sr.fidelity=wavelet", "--variant", "b sr.fidelity=adain", "--variant", "c sr.fidelty=none"],
     "variant c: unknown config key 'sr.fidelty' in the command line; did you mean 'sr.fidelity'?"),
    (["--variant", "a", "--variant", "b peer.kind=spandrel peer.path=/no/such.safetensors"], "variant b: "),
    (["--variant", "a", "--variant", "b model.device=cuda:99"], "variant b: model.device=cuda:99: this machine has "),
    (["--variant", "a", "--variant", "b input.uri=/elsewhere"], "variant b: input.uri=/elsewhere changes what every "
                                                                "variant shares"),
    (["--variant", "a", "--variant", "b storage.region=eu-west-1"], "variant b: storage.region=eu-west-1 changes"),
    (["compare.variants=[a, b]"], "compare.variants entry 'a': give a mapping of name"),
    (["compare.variants=[{name: a, overrides: sr.scale=2}, {name: b}]"], "overrides='sr.scale=2' must be a list"),
    (["--variant", "a", "--variant", "b peer.command='prog {input}"], "No closing quotation"),
]


@pytest.mark.parametrize("variants, message", CASES)
def test_every_variant_is_checked_before_any_runs(scans, capsys, variants, message):
    status = cli(["compare", "--config", "local", f"input.uri={scans / 'scans'}", f"output.uri={scans / 'cmp'}",
                  *variants])
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("op4ksr compare: ") and message in err, err
    assert not (scans / "cmp").exists()  # nothing listed into it, no variant run
