"""model.offload=blocks: the transformer's blocks live off the device and visit it one at a time.

FLUX.1-dev's 57 blocks are 23.5 GB of its 23.8 GB in bf16; one block is at most 0.68 GB. With
offload=blocks the embedders, the output layers and the VAE stay resident, and each block is put
on the device just before it runs (a forward pre-hook), the next one is fetched meanwhile, and
the block is released after it ran (a forward hook): device memory holds two blocks, not 57.

Where the blocks wait:
- a checkpoint folder (the CPU, or any device when nothing else holds them): each block's tensors
  are read from the safetensors file with plain file I/O at each visit (op4ksr.tensorfile;
  no mapping whose pages would stay resident), on a helper thread one block ahead. Peak host
  memory is two blocks plus activations, and every forward reads the blocks' bytes from the file
  (or the page cache).
- host memory (a model already built, or CUDA): the blocks' tensors stay on the host, pinned
  when the device is CUDA, and each visit copies one block to the device on a side stream one
  block ahead; the main stream waits for that copy only when the block is due.

The result is the same computation: the block runs the same kernels on the same weights, so on
a CPU the output equals offload=none's exactly (tests/op4ksr/test_offload.py).
"""
from __future__ import annotations

import concurrent.futures
import threading
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from op4ksr.tensorfile import read_tensor, source_tensors
from op4ksr.quantize import SCALE_SUFFIX, convert_int8, is_int8_target, quantize_int8

OFFLOAD_MODES = ("none", "blocks")
BLOCK_LISTS = ("transformer_blocks", "single_transformer_blocks")


def transformer_blocks(transformer: nn.Module) -> list[tuple[str, nn.Module]]:
    """(state-dict prefix, block) of every block, in the order the forward runs them."""
    return [(f"{name}.{i}.", block) for name in BLOCK_LISTS for i, block in enumerate(getattr(transformer, name))]


def prepare_tensor(key: str, tensor: torch.Tensor, dtype: torch.dtype, int8: bool) -> dict[str, torch.Tensor]:
    """{key: tensor} as the model holds it: floats in `dtype`; with `int8`, a block Linear's weight as
    int8 + its scale (quantised here when the checkpoint stores it in float)."""
    if key.endswith("." + SCALE_SUFFIX):
        return {key: tensor.to(dtype)}
    if tensor.dtype == torch.int8:
        return {key: tensor}
    if int8 and is_int8_target(key, tuple(tensor.shape)):
        q, scale = quantize_int8(tensor)
        return {key: q, key.removesuffix("weight") + SCALE_SUFFIX: scale.to(dtype)}
    return {key: tensor.to(dtype) if tensor.is_floating_point() else tensor}


class FileBlocks:
    """Block tensors read from a component folder's safetensors at each visit."""

    def __init__(self, folder: Path, dtype: torch.dtype, int8: bool):
        self.tensors = source_tensors(Path(folder))  # headers only
        self.dtype, self.int8 = dtype, int8

    def keys(self) -> list[str]:
        return list(self.tensors)

    def read(self, prefix: str, keys: list[str] | None = None) -> dict[str, torch.Tensor]:
        """{key without prefix: tensor} of every stored tensor under `prefix`, on the host."""
        out = {}
        wanted = None if keys is None else set(keys)
        for key, info in self.tensors.items():
            if key.startswith(prefix) and (wanted is None or key in wanted):
                for k, t in prepare_tensor(key, read_tensor(info), self.dtype, self.int8).items():
                    out[k[len(prefix):]] = t
        return out


class HostBlocks:
    """Block tensors held in host memory (pinned for a CUDA device): {prefix: {key: tensor}}."""

    def __init__(self, state: dict[str, dict[str, torch.Tensor]]):
        self.state = state

    @classmethod
    def of_blocks(cls, blocks: list[tuple[str, nn.Module]], pin: bool) -> "HostBlocks":
        """The tensors of built blocks (shared, not copied, on a CPU; pinned copies for CUDA)."""
        state = {}
        for prefix, block in blocks:
            tensors = {k: v.detach().cpu() for k, v in block.state_dict().items()}
            state[prefix] = {k: v.pin_memory() if pin else v for k, v in tensors.items()}
            if pin:  # the unpinned originals go now: the host never holds the weights twice
                del tensors
                release(block)
        return cls(state)

    def read(self, prefix: str) -> dict[str, torch.Tensor]:
        return self.state[prefix]


class BlockStreamer:
    """Hooks that bring each block onto `device` before it runs, prefetch the next, release it after."""

    def __init__(self, blocks: list[tuple[str, nn.Module]], read: Callable[[str], dict], device: torch.device):
        self.blocks, self.read, self.device = blocks, read, torch.device(device)
        self.cuda = self.device.type == "cuda"
        if self.device.type == "cpu":
            return_large_frees_to_the_os()
        self.side = torch.cuda.Stream(self.device) if self.cuda else None
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="op4ksr-blocks")
        self.pending: dict[int, concurrent.futures.Future] = {}
        self.visits = 0  # blocks brought onto the device (a check for tests and benches)
        self.lock, self.live_bytes, self.peak_live_bytes = threading.Lock(), 0, 0  # fetched, not yet released
        for index, (_, block) in enumerate(blocks):
            release(block)
            block.register_forward_pre_hook(lambda module, args, i=index: self.arrive(i))
            block.register_forward_hook(lambda module, args, out: self._release(module))

    def _count(self, nbytes: int) -> None:
        with self.lock:
            self.live_bytes += nbytes
            self.peak_live_bytes = max(self.peak_live_bytes, self.live_bytes)

    def _release(self, block: nn.Module) -> None:
        self._count(-sum(t.nbytes for t in block.state_dict().values()))
        release(block)

    def _fetch(self, index: int) -> tuple[dict, object]:
        """Block `index`'s tensors on the device (an event to wait for on CUDA); runs on the helper thread."""
        with torch.inference_mode(False), torch.no_grad():
            host = self.read(self.blocks[index][0])
            self._count(sum(t.nbytes for t in host.values()))
            if not self.cuda:
                return {k: v.to(self.device) for k, v in host.items()}, None
            with torch.cuda.stream(self.side):
                state = {k: v.to(self.device, non_blocking=True) for k, v in host.items()}
                event = torch.cuda.Event()
                event.record(self.side)
            return state, event

    def _start(self, index: int) -> None:
        if 0 <= index < len(self.blocks) and index not in self.pending:
            self.pending[index] = self.pool.submit(self._fetch, index)

    def arrive(self, index: int) -> None:
        """Pre-hook of block `index`: its tensors assigned (waiting for the fetch), the next one started."""
        self._start(index)
        state, event = self.pending.pop(index).result()
        self._start(index + 1)
        if event is not None:  # the copy ran on the side stream: the compute stream waits for it, and
            main = torch.cuda.current_stream(self.device)  # the allocator keeps the memory until it is done
            main.wait_event(event)
            for tensor in state.values():
                tensor.record_stream(main)
        block = self.blocks[index][1]
        with torch.inference_mode(False), torch.no_grad():
            block.load_state_dict(state, strict=True, assign=True)
        self.visits += 1

    def close(self) -> None:
        self.pool.shutdown(wait=True)


MMAP_THRESHOLD_BYTES = 1 << 20
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


def return_large_frees_to_the_os() -> bool:
    """Fix glibc's mmap threshold at 1 MiB for this process; whether it was set (False off glibc).

    glibc raises the threshold to the size of each large chunk freed, up to 32 MiB, and the trim
    threshold with it. Streaming blocks frees a block's tensors (many of 2-32 MiB) at every visit, and
    after the first such free they came from heaps that are not given back: the first flux-dev CPU
    forward's RSS grew by about 0.3 GB per GB of blocks read (docs/PERFORMANCE.md). A fixed threshold
    maps every tensor of 1 MiB or more on its own and unmaps it when freed, so RSS follows live tensors."""
    import ctypes

    try:
        return bool(ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    except (AttributeError, OSError):
        return False


def release(block: nn.Module) -> None:
    """Drop a block's tensors (they go back to the meta device: shapes kept, memory freed)."""
    block.to_empty(device="meta")


def load_streamed_transformer(cls, folder: Path, device, dtype: torch.dtype, int8: bool) -> nn.Module:
    """The transformer of a checkpoint folder with everything but its blocks resident on `device` and
    the blocks streamed from the folder's files at each forward (FileBlocks on a CPU; HostBlocks,
    pinned, read once from the files, on CUDA)."""
    from op4ksr.checkpoint import check_state_dict, meta_component, read_config

    module = meta_component(cls, read_config(folder), f"{folder}/config.json")
    if int8:
        convert_int8(module)
    files = FileBlocks(folder, dtype, int8)
    stored = dict(files.tensors)  # TensorInfo has .shape: checked before any data is read
    if int8 and not any(k.endswith(SCALE_SUFFIX) for k in stored):  # quantised at load: scales are computed
        stored.update({k: v for k, v in module.state_dict().items() if k.endswith(SCALE_SUFFIX)})
    check_state_dict(module, stored, str(folder))
    blocks = transformer_blocks(module)
    prefixes = tuple(prefix for prefix, _ in blocks)
    resident = [k for k in files.keys() if not k.startswith(prefixes)]
    module.load_state_dict({k: v.to(device) for k, v in files.read("", resident).items()}, strict=False, assign=True)
    device = torch.device(device)
    if device.type == "cuda":  # the blocks wait in pinned host memory: read from the files once
        host = HostBlocks({prefix: {k: v.pin_memory() for k, v in files.read(prefix).items()} for prefix in prefixes})
        module._op4ksr_streamer = BlockStreamer(blocks, host.read, device)
    else:
        module._op4ksr_streamer = BlockStreamer(blocks, files.read, device)
    return module.eval()


def stream_blocks(transformer: nn.Module, device) -> BlockStreamer:
    """Offload the blocks of a transformer already built in memory (a preset's): they wait in host
    memory (pinned for CUDA) and visit `device` one at a time. Returns the streamer."""
    device = torch.device(device)
    blocks = transformer_blocks(transformer)
    host = HostBlocks.of_blocks(blocks, pin=device.type == "cuda")
    transformer._op4ksr_streamer = BlockStreamer(blocks, host.read, device)
    return transformer._op4ksr_streamer


def streamer_of(transformer: nn.Module) -> BlockStreamer | None:
    """The BlockStreamer of an offloaded transformer, None when its blocks are resident."""
    return getattr(transformer, "_op4ksr_streamer", None)


def load_transformer(cls, folder: Path, device, dtype: torch.dtype, *, weights: str = "dtype",
                     offload: str = "none") -> nn.Module:
    """A checkpoint's transformer held as `weights` (dtype | fp8 | int8) and `offload` (none | blocks).

    The stored mode is checked first (op4ksr.quantize.check_weights_mode): an int8 checkpoint needs
    weights=int8, an fp8 one cannot become int8."""
    from op4ksr.checkpoint import load_component, meta_component, read_config
    from op4ksr.quantize import check_weights_mode, stored_weights_mode

    files = FileBlocks(folder, dtype, int8=weights == "int8")
    check_weights_mode(weights, offload, stored_weights_mode({k: t.dtype for k, t in files.tensors.items()}), str(folder))
    if offload == "blocks":
        return load_streamed_transformer(cls, folder, device, dtype, int8=weights == "int8")
    if weights == "int8":
        module = meta_component(cls, read_config(folder), f"{folder}/config.json")
        convert_int8(module)
        module.load_state_dict({k: v.to(device) for k, v in files.read("").items()}, strict=True, assign=True)
        return module.eval()
    module = load_component(cls, folder, device, dtype)
    if weights == "fp8":
        from op4ksr.quantize import quantize_fp8

        quantize_fp8(module)
    return module


def hold_transformer(transformer: nn.Module, device, *, weights: str = "dtype", offload: str = "none") -> None:
    """Convert a transformer built in memory (a preset's) to `weights` and `offload` in place."""
    from op4ksr.quantize import check_weights_mode

    check_weights_mode(weights, offload, "dtype", "the preset")
    if torch.device(device).type == "meta":
        return
    if weights == "int8":
        convert_int8(transformer)
    elif weights == "fp8":
        from op4ksr.quantize import quantize_fp8

        quantize_fp8(transformer)
    if offload == "blocks":
        stream_blocks(transformer, device)


def move_resident(model: nn.Module, device) -> None:
    """Move everything of an OP4KSR model but its streamed blocks to `device` (the blocks are meta between visits)."""
    device = torch.device(device)
    for name, child in model.transformer.named_children():
        if name not in BLOCK_LISTS:
            child.to(device)
    model.vae.to(device)
    for name in ("prompt_embeds", "pooled_embeds"):
        setattr(model, name, getattr(model, name).to(device))
