"""safetensors read and written one tensor at a time, with plain file I/O.

The importer never holds a whole component: it reads a tensor, converts (and merges LoRA into)
it, writes it and lets it go; model.offload=blocks reads one block's tensors at a time (op4ksr.offload). `safetensors.safe_open` maps whole files into the process, whose
pages then count as resident however little is used, and `safetensors.torch.save_file` builds
an in-memory copy of everything it writes; both would make peak memory scale with the model.
The format (https://github.com/huggingface/safetensors, "Format"): an 8-byte little-endian
header length, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {...}}, then
the tensors' bytes back to back with no holes.
"""
from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch

from op4ksr.checkpoint import CheckpointError, weight_files

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}
NAMES = {v: k for k, v in DTYPES.items()}


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives: its file, dtype, shape and byte range in the file."""

    path: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int  # absolute offset in the file
    nbytes: int


def read_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """The tensors of a safetensors file by name (in file order) and its metadata, without reading data."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise CheckpointError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
        (length,) = struct.unpack("<Q", raw)
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CheckpointError(f"{path}: not a safetensors file ({err})") from None
    metadata = header.pop("__metadata__", None) or {}
    tensors = {}
    for name, entry in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        if entry["dtype"] not in DTYPES:
            raise CheckpointError(f"{path}: tensor {name} has dtype {entry['dtype']}, which the importer does not read")
        begin, end = entry["data_offsets"]
        tensors[name] = TensorInfo(path, DTYPES[entry["dtype"]], tuple(entry["shape"]), 8 + length + begin, end - begin)
    return tensors, metadata


def source_tensors(folder: Path) -> dict[str, TensorInfo]:
    """Every tensor of a component folder (one file or an index of shards), in file order, headers only."""
    tensors: dict[str, TensorInfo] = {}
    for path in weight_files(folder):
        found, _ = read_header(path)
        duplicate = next((k for k in found if k in tensors), None)
        if duplicate:
            raise CheckpointError(f"{folder}: tensor {duplicate} is stored in two shards")
        tensors.update(found)
    return tensors


def read_tensor(info: TensorInfo) -> torch.Tensor:
    """One tensor's values, read into fresh memory."""
    data = torch.empty(info.nbytes, dtype=torch.uint8)
    with open(info.path, "rb") as f:
        f.seek(info.start)
        if f.readinto(memoryview(data.numpy())) != info.nbytes:
            raise CheckpointError(f"{info.path}: truncated (a tensor ends past the end of the file)")
    return data.view(info.dtype).reshape(info.shape)


def write_streaming(path: Path, plan: Iterable[tuple[str, tuple[int, ...], torch.dtype]],
                    tensor_for: Callable[[str], torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write a safetensors file whose tensors (name, shape, dtype in `plan` order) come one at a time from `tensor_for`."""
    plan = list(plan)
    header, offset = {}, 0
    for name, shape, dtype in plan:
        nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        header[name] = {"dtype": NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    if metadata:
        header["__metadata__"] = metadata
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)) + encoded)
        for name, shape, dtype in plan:
            tensor = tensor_for(name)
            if tuple(tensor.shape) != tuple(shape) or tensor.dtype != dtype:
                raise ValueError(f"{name}: got {tuple(tensor.shape)} {tensor.dtype}, planned {shape} {dtype}")
            f.write(memoryview(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()))
