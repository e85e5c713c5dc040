"""Input validation shared by every op.

Every check raises `TypeError` (wrong kind or dtype) or `ValueError` (wrong shape or
value) with a message that names the argument, what was expected and what was given.
"""
from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
INDEX_DTYPES = (torch.int32, torch.int64)


def check_tensor(name: str, x, *, floating: bool = True) -> torch.Tensor:
    """Raise unless `x` is a tensor (of a supported float dtype when `floating`)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if floating and x.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name}: expected a floating dtype (float16, bfloat16, float32, float64), got {x.dtype}"
        )
    return x


class Dims:
    """Binds the legend letters (`B`, `T`, `H`, `K`, ...) to sizes as arguments are checked.

    `dims.bind("k", k, "B S G K")` checks the rank of `k` and that every letter agrees
    with the size it was first bound to, naming the argument that bound it.
    """

    def __init__(self, **known: int):
        self.sizes: dict[str, int] = dict(known)
        self.bound_by: dict[str, str] = {letter: "the call" for letter in known}

    def bind(self, name: str, x: torch.Tensor, spec: str) -> None:
        # Runs on every call of every op (a decoding step included), so the messages are
        # only built on failure.
        letters = spec.split()
        shape = x.shape
        if len(shape) != len(letters):
            raise ValueError(
                f"{name}: expected {len(letters)} dimensions {_legend(letters)}, got shape {list(shape)}"
            )
        sizes = self.sizes
        for letter, size in zip(letters, shape):
            known = sizes.get(letter)
            if known is None:
                sizes[letter] = size
                self.bound_by[letter] = name
            elif known != size:
                raise ValueError(
                    f"{name}: expected shape {_legend(letters)} with {letter}={known} "
                    f"(from {self.bound_by[letter]}), got shape {list(shape)}"
                )

    def fix(self, letter: str, size: int, source: str) -> None:
        """Bind `letter` to `size` from something that is not a tensor (e.g. the number of
        sequences in `cu_seqlens`)."""
        self.sizes[letter], self.bound_by[letter] = size, source

    def __getitem__(self, letter: str) -> int:
        return self.sizes[letter]


def _legend(letters: list[str]) -> str:
    return "[" + ", ".join(letters) + "]"


def check_same_dtype(**tensors: torch.Tensor) -> None:
    """Raise `TypeError` unless all given tensors share one dtype."""
    names = list(tensors)
    first = tensors[names[0]]
    for name in names[1:]:
        if tensors[name].dtype != first.dtype:
            raise TypeError(
                f"{name}: expected dtype {first.dtype} (the dtype of {names[0]}), "
                f"got {tensors[name].dtype}"
            )


def check_same_device(**tensors: torch.Tensor | None) -> None:
    """Raise `ValueError` unless all given (non-None) tensors live on one device."""
    present = {name: t for name, t in tensors.items() if t is not None}
    names = list(present)
    first = present[names[0]]
    for name in names[1:]:
        if present[name].device != first.device:
            raise ValueError(
                f"{name}: expected a tensor on {first.device} (the device of {names[0]}), "
                f"got one on {present[name].device}"
            )


def check_log_gate(name: str, g: torch.Tensor) -> None:
    """Raise `ValueError` if a log-decay gate has a positive or NaN entry (a decay above 1)."""
    if not bool((g <= 0).all()):
        bad = g[~(g <= 0)].flatten()[0].item()
        raise ValueError(
            f"{name}: expected log-decay values <= 0 (decays in (0, 1]), got a value of {bad}"
        )


def check_positive_int(name: str, value, *, allow_none: bool = True) -> None:
    """Raise unless `value` is a positive int (or None when allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected a positive int, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"{name}: expected a positive int, got {value}")


def check_scale(scale) -> None:
    """Raise unless `scale` is None or a finite real number."""
    if scale is None:
        return
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"scale: expected a float or None, got {type(scale).__name__}")
    if scale != scale or scale in (float("inf"), float("-inf")):
        raise ValueError(f"scale: expected a finite number, got {scale}")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The precision the reference computes and keeps states in: float64 for float64
    inputs, float32 for every other float dtype."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_state(state, state_type: type, dims: Dims, specs: dict[str, str], device) -> None:
    """Check `initial_state` is a `state_type` whose fields have the shapes in `specs`
    and live on `device`.

    specs: field name -> legend spec, e.g. `{"S": "N H K V"}`; letters bind in `dims`.
    """
    if not isinstance(state, state_type):
        raise TypeError(
            f"initial_state: expected a {state_type.__name__} "
            f"(fields {', '.join(state_type._fields)}), got {type(state).__name__}"
        )
    for field, spec in specs.items():
        name = f"initial_state.{field}"
        value = getattr(state, field)
        check_tensor(name, value, floating=spec_is_float(field, state_type))
        dims.bind(name, value, spec)
        if value.device != device:
            raise ValueError(f"{name}: expected a tensor on {device} (the device of q), got one on {value.device}")


def spec_is_float(field: str, state_type: type) -> bool:
    """States are float tensors except the integer bookkeeping of a KV cache."""
    return field not in ("positions", "next_position")
