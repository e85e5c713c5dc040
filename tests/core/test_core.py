"""core: form / impl resolution, shape binding, varlen helpers."""
import pytest
import torch

from attnforms.core.dispatch import Family, ImplUnavailableError, resolve_form, resolve_impl
from attnforms.core.shapes import Dims, check_log_gate
from attnforms.core.states import KVCache, LinearState
from attnforms.core.varlen import check_cu_seqlens, concat_states, select_state


def _reference(name):
    def run(**kwargs):
        return name

    return run


FAMILY = Family("toy", reference={f: _reference(f) for f in ("parallel", "chunk", "recurrent")})
WITH_KERNEL = Family("toy", reference=FAMILY.reference, triton={"chunk": _reference("triton-chunk")})


@pytest.mark.parametrize(
    "form,length,expected",
    [("auto", 1, "recurrent"), ("auto", 2, "chunk"), ("parallel", 1, "parallel"), ("recurrent", 500, "recurrent")],
)
def test_resolve_form(form, length, expected):
    assert resolve_form(FAMILY, form, length) == expected


def test_auto_follows_the_family_training_form():
    family = Family("toy", reference=FAMILY.reference, auto_form="parallel")
    assert resolve_form(family, "auto", 100) == "parallel"


def test_auto_impl_on_cpu_is_the_reference_even_with_a_kernel():
    assert resolve_impl(WITH_KERNEL, "auto", "chunk", torch.device("cpu"))() == "chunk"


def test_explicit_triton_without_kernel_says_so():
    with pytest.raises(ImplUnavailableError, match="no Triton kernel for form='parallel'"):
        resolve_impl(WITH_KERNEL, "triton", "parallel", torch.device("cpu"))


def test_explicit_triton_on_cpu_without_interpreter_says_why(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ImplUnavailableError, match="CUDA devices"):
        resolve_impl(WITH_KERNEL, "triton", "chunk", torch.device("cpu"))


def test_explicit_triton_runs_under_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert resolve_impl(WITH_KERNEL, "triton", "chunk", torch.device("cpu"))() == "triton-chunk"


def test_dims_names_the_argument_that_bound_a_letter():
    dims = Dims()
    dims.bind("q", torch.zeros(2, 5, 3, 8), "B T H K")
    with pytest.raises(ValueError, match=r"k: expected shape \[B, T, H, K\] with K=8 \(from q\), got shape \[2, 5, 3, 4\]"):
        dims.bind("k", torch.zeros(2, 5, 3, 4), "B T H K")


def test_log_gate_check_reports_the_offending_value():
    with pytest.raises(ValueError, match="got a value of 0.25"):
        check_log_gate("g", torch.tensor([-1.0, 0.25]))


@pytest.mark.parametrize(
    "offsets,message",
    [([0, 3, 3, 8], "strictly increasing"), ([1, 8], "start at 0"), ([0, 7], "end at the total length"), ([8], r"\[N \+ 1\]")],
)
def test_cu_seqlens_errors(offsets, message):
    with pytest.raises(ValueError, match=message):
        check_cu_seqlens(torch.tensor(offsets), batch=1, total=8, device=torch.device("cpu"))


def test_concat_states_pads_ragged_caches_with_empty_slots():
    short = KVCache(torch.ones(1, 1, 1, 2), torch.ones(1, 1, 1, 2), torch.tensor([[4]]), torch.tensor([5]))
    long = KVCache(torch.ones(1, 3, 1, 2), torch.ones(1, 3, 1, 2), torch.tensor([[0, 1, 2]]), torch.tensor([3]))
    both = concat_states([short, long])
    assert both.positions.tolist() == [[4, -1, -1], [0, 1, 2]]
    assert both.next_position.tolist() == [5, 3]
    assert torch.equal(select_state(both, 1).k, long.k)


def test_concat_linear_states():
    states = [LinearState(torch.full((1, 2, 3, 4), float(n))) for n in range(3)]
    stacked = concat_states(states)
    assert stacked.S.shape == (3, 2, 3, 4) and stacked.S[2].eq(2).all()


def _forward_only(name):
    run = _reference(name)
    run.backward_refusal = lambda inputs: "no backward kernel" if inputs.get("g") is not None else None
    return run


FORWARD_ONLY = Family("toy", reference=FAMILY.reference, triton={"chunk": _forward_only("triton-chunk")})


def test_explicit_triton_refuses_gradients_its_kernel_cannot_give(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    cpu = torch.device("cpu")
    with pytest.raises(ImplUnavailableError, match="cannot give gradients here \\(no backward kernel\\)"):
        resolve_impl(FORWARD_ONLY, "triton", "chunk", cpu, needs_grad=True, inputs={"g": torch.zeros(1)})
    # Without gradients, or for inputs the kernel can differentiate, it runs.
    assert resolve_impl(FORWARD_ONLY, "triton", "chunk", cpu, needs_grad=False, inputs={"g": torch.zeros(1)})() == "triton-chunk"
    assert resolve_impl(FORWARD_ONLY, "triton", "chunk", cpu, needs_grad=True, inputs={"g": None})() == "triton-chunk"


def test_noise_check_discounts_one_ulp_per_element_and_no_more():
    from attnforms.testing import noise_relative_check

    golden = torch.tensor([8.4, 0.3, -2.0], dtype=torch.float64)
    eager = golden.bfloat16()
    # One element rounded the other way: one ulp of that element, allowed.
    flipped = eager.clone()
    flipped[0] = torch.nextafter(eager[0].float(), torch.tensor(100.0)).bfloat16()
    assert noise_relative_check(flipped, golden, eager, atol=1e-6, rounding=torch.bfloat16).passed
    # A 2% error is far more than rounding, at large and small elements alike.
    assert not noise_relative_check((golden * 1.02).bfloat16(), golden, eager, atol=1e-6, rounding=torch.bfloat16).passed
