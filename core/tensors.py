"""What the tensors of an untrusted file must be, checked from its header before any tensor data is read.

A safetensors header lists every tensor's name, shape and dtype; the network a configuration describes is
built on torch's "meta" device (shapes only, no memory), so a file whose tensors do not fit its own
configuration, or a configuration that asks for a network far larger than its file, is refused before
anything large is allocated. The same check serves model files, resume files and course weight files.
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open

from .errors import UserError

# safetensors dtype names by what a tensor of ours may hold: floating weights in any precision we save or
# a user converts to, whole-number counters (BatchNorm's num_batches_tracked), bytes (a generator's state).
KINDS = {
    "float": {"F16", "BF16", "F32", "F64"},
    "int": {"I64", "I32", "I16", "I8", "U8"},
    "uint8": {"U8"},
}
_SAFETENSORS_NAME = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32", torch.float64: "F64",
                     torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
                     torch.bool: "BOOL"}


def expected_state(net: torch.nn.Module) -> dict[str, tuple[tuple[int, ...], str]]:
    """{name: (shape, kind)} of a network's state dict (works on a meta-device network)."""
    return {k: (tuple(v.shape), "float" if v.is_floating_point() else "int") for k, v in net.state_dict().items()}


def meta_network(config) -> torch.nn.Module:
    """The network a UNetConfig describes, on the meta device: its shapes, no memory."""
    from .unet import build_network

    with torch.device("meta"):
        return build_network(config)


def header_index(path: str | Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """{name: (shape, safetensors dtype)} from a safetensors file's header alone."""
    with safe_open(str(path), framework="pt") as f:
        return {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}


def index_of(state: dict) -> dict[str, tuple[tuple[int, ...], str]]:
    """The same index for tensors already in memory (a course .pth), dtypes by their safetensors names."""
    return {k: (tuple(v.shape), _SAFETENSORS_NAME.get(v.dtype, str(v.dtype))) for k, v in state.items()}


def check_index(index: dict, expected: dict, source: str, *, error: type[Exception] = UserError,
                required=None) -> None:
    """Every tensor of `index` is one `expected` names ({name: (shape, kind)}, or (shape, kind, what a wrong
    shape means) where "weights do not match the configuration" would not say it), with its shape and a dtype
    of its kind; every name of `required` (default: all of `expected`) is there. Raises error("<source>: ...")
    at the first that is not."""
    for name, (shape, dtype) in index.items():
        if name not in expected:
            raise error(f"{source}: weights do not match the configuration (unexpected tensor {_short(str(name))})")
        want_shape, kind, *why = expected[name]
        if tuple(shape) != tuple(want_shape):
            found = f"tensor {name} has shape {_shape(shape)}, the configuration needs {tuple(want_shape)}"
            raise error(f"{source}: {why[0]} ({found})" if why else
                        f"{source}: weights do not match the configuration ({found})")
        if dtype not in KINDS[kind]:
            raise error(f"{source}: tensor {name} holds {dtype} values where {_kind_words(kind)} belong; the file "
                        "is damaged or not one of ours")
    missing = next((k for k in (expected if required is None else required) if k not in index), None)
    if missing is not None:
        raise error(f"{source}: weights do not match the configuration (tensor {missing} is missing)")


def first_non_finite(tensors: dict) -> str | None:
    """The name of the first floating tensor holding NaN or an infinity, or None."""
    return next((k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)


def _kind_words(kind: str) -> str:
    return {"float": "floating-point numbers", "int": "whole numbers", "uint8": "bytes (uint8)"}[kind]


def _shape(shape) -> str:
    text = str(tuple(shape))
    return text if len(text) <= 60 else f"of {len(shape)} dimensions"


def _short(name: str) -> str:
    return name if len(name) <= 80 else name[:80] + "..."
