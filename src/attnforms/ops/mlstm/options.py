"""The mLSTM's option values, checked in one place for the API, the layer and every
implementation (the Triton entry points never import reference.py, so not there)."""
from __future__ import annotations

# normaliser_gradient: "exact", or "held" (the normaliser's reciprocal and every
# stabiliser m constant for the gradient, as mlstm_kernels' TFLA computes it; README.md).
NORMALISER_GRADIENTS = ("exact", "held")


def check_normaliser_gradient(value: str) -> None:
    """A ValueError naming the argument unless `value` is one of NORMALISER_GRADIENTS."""
    if value not in NORMALISER_GRADIENTS:
        raise ValueError(f"normaliser_gradient: expected one of {NORMALISER_GRADIENTS}, got {value!r}")


def held_gradient(normaliser_gradient: str) -> bool:
    """Whether the normaliser and the stabiliser are held constant for the gradient."""
    check_normaliser_gradient(normaliser_gradient)
    return normaliser_gradient == "held"
