"""The output formats: their Pillow names and file extensions (no torch, no Pillow).

Apart from op4ksr.images.codec so that what only names output files (pipeline/manifest/layout.py, and
through it `op4ksr report` and `op4ksr cost`, which read Parquet) does not import torch.
"""
FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "tiff": "TIFF"}
EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "tiff": ".tif"}
