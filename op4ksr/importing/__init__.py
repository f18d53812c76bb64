"""Public weights -> OP4KSR checkpoints (`op4ksr import`; docs/MODELS.md).

A FluxPipeline folder (or a bare transformer with prompt embeddings), an optional VAE whose
config's `stride` picks the F16 or 8x layout, and LoRA adapters merged at import; the output
is the normal checkpoint layout with a `source` section in model_index.json.
"""
from op4ksr.importing.build import ImportSpec, import_checkpoint
from op4ksr.importing.lora import KNOWN_FORMATS, LoraError

__all__ = ["ImportSpec", "import_checkpoint", "KNOWN_FORMATS", "LoraError"]
