"""core/memo.py: a validator is skipped for a signature that passed before, and only then."""
import pytest
import torch

import attnforms as af
from attnforms.core.memo import remembers_success
from attnforms.testing import gated_delta_inputs, mlstm_inputs


def _counting_validator():
    calls = []

    @remembers_success(value_args=("cu_seqlens",))
    def validate(x, option, cu_seqlens):
        calls.append(1)
        if x.shape[-1] == 0:
            raise ValueError("x: empty")
        return x.shape[0]

    return validate, calls


def test_a_seen_signature_skips_the_checks_and_returns_the_first_result():
    validate, calls = _counting_validator()
    assert validate(torch.zeros(2, 3), "a", None) == 2
    assert validate(torch.ones(2, 3), "a", None) == 2       # other values, same signature
    assert len(calls) == 1


@pytest.mark.parametrize("other", [
    (torch.zeros(2, 4), "a"), (torch.zeros(2, 3, dtype=torch.float64), "a"), (torch.zeros(2, 3), "b"),
    (torch.zeros(2, 3), 1.0),
])
def test_any_change_of_shape_dtype_or_option_validates_again(other):
    validate, calls = _counting_validator()
    validate(torch.zeros(2, 3), "a", None)
    validate(*other, None)
    assert len(calls) == 2


def test_a_failing_call_is_never_remembered():
    validate, calls = _counting_validator()
    for _ in range(2):
        with pytest.raises(ValueError, match="x: empty"):
            validate(torch.zeros(2, 0), "a", None)
    assert len(calls) == 2


def test_value_arguments_and_unknown_types_always_validate():
    validate, calls = _counting_validator()
    for _ in range(2):
        validate(torch.zeros(2, 3), "a", torch.tensor([0, 2]))
        validate(torch.zeros(2, 3), ["a"], None)
    assert len(calls) == 4


def test_ops_still_reject_bad_calls_after_good_ones():
    good = mlstm_inputs(1, 4, 2, 8, 8)
    af.mlstm(**good, impl="reference")
    af.mlstm(**good, impl="reference")
    bad = dict(good, v=good["v"][..., :-1].contiguous(), k=good["k"][:, :3])
    with pytest.raises(ValueError, match="k: expected shape"):
        af.mlstm(**bad, impl="reference")


def test_gate_values_are_checked_on_every_call():
    # The Triton path (the interpreter here) relies on the API's check off CUDA: a
    # remembered check would let decays above 1 through as NaN instead of an error.
    inputs = gated_delta_inputs(1, 4, 2, 16, 16, dtype=torch.float32)
    af.gated_delta_rule(**inputs, impl="triton")
    positive = dict(inputs, g=inputs["g"].abs() + 0.5)  # same signature, decays above 1
    with pytest.raises(ValueError, match="log-decay"):
        af.gated_delta_rule(**positive, impl="triton")
