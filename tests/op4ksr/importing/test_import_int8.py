"""`op4ksr import --weights int8`: the block Linears stored int8 with a float32 scale per output channel."""
import pytest
import torch

from op4ksr.checkpoint import weight_files
from op4ksr.importing import ImportSpec, import_checkpoint
from op4ksr.model import OP4KSR
from op4ksr.quantize import WeightsModeError
from op4ksr.tensorfile import read_header
from tests import public_flux
from tests.tolerance import assert_forwards_close


@pytest.fixture(scope="module")
def imported(tmp_path_factory, one_torch_thread):
    """The tiny public pipeline imported twice: float32, and with --weights int8."""
    root = tmp_path_factory.mktemp("public-int8")
    public_flux.save_pipeline(root / "FLUX.1-tiny")
    indexes = {w: import_checkpoint(ImportSpec(base=root / "FLUX.1-tiny", out=root / w, dtype="float32", weights=w))
               for w in ("dtype", "int8")}
    return root, indexes


def test_block_linears_are_stored_int8_and_the_rest_as_before(imported):
    root, indexes = imported
    assert indexes["int8"]["weights"] == "int8" and "weights" not in indexes["dtype"]
    assert indexes["int8"]["source"]["weights"] == "int8"
    (path,) = weight_files(root / "int8" / "transformer")
    header, _ = read_header(path)
    linears = [k for k, v in header.items() if v.dtype == torch.int8]
    assert linears and all(k.startswith(("transformer_blocks.", "single_transformer_blocks.")) for k in linears)
    assert all(header[k.removesuffix("weight") + "weight_scale"].dtype == torch.float32 for k in linears)
    assert header["proj_out.weight"].dtype == torch.float32 and header["x_embedder.weight"].dtype == torch.float32
    assert path.stat().st_size < next(iter(weight_files(root / "dtype" / "transformer"))).stat().st_size


def test_the_stored_int8_model_equals_quantising_the_float_checkpoint_at_load(imported):
    root, _ = imported
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    stored = OP4KSR.from_pretrained(root / "int8", weights="int8").upscale(x)
    assert_forwards_close(stored, OP4KSR.from_pretrained(root / "dtype", weights="int8").upscale(x))  # two objects: tolerance
    with pytest.raises(WeightsModeError, match="stored in int8; set model.weights=int8"):
        OP4KSR.from_pretrained(root / "int8")
