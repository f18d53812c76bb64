"""OP4KSR model library: one-step, patch-free 4K super-resolution (torch + diffusers only)."""

__version__ = "0.1.0"
