"""How closely two model objects' float outputs must agree.

Weights are compared bit for bit. Forwards of two model objects (a saved and reloaded copy, ours
and stock diffusers) are compared within FORWARD_ATOL: CPU kernels pick different vector paths by
memory alignment and processor (AMD EPYC vs Intel differ by ~2e-6 on the tiny model), so bit
equality of outputs is not a property of the code. 1e-5 is 5x that spread and still far below
any real difference (an RFR change moves outputs by > 1e-3).
"""
import torch

FORWARD_ATOL = 1e-5


def assert_forwards_close(actual: torch.Tensor, expected: torch.Tensor, atol: float = FORWARD_ATOL) -> None:
    """Same shape and every element within `atol` (no relative slack: outputs are O(1))."""
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)
