"""core/autograd.py: a Function runs unrecorded exactly when nothing needs a gradient,
with the same result as through `apply`."""
import torch

from attnforms.core.autograd import apply_function, autograd_needed


class _Scale(torch.autograd.Function):
    calls = []

    @staticmethod
    def forward(ctx, x, factor):
        _Scale.calls.append(any(ctx.needs_input_grad))
        ctx.save_for_backward(x)
        ctx.factor = factor
        return x * factor

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


def test_autograd_needed_follows_grad_mode():
    plain, tracked = torch.zeros(2), torch.zeros(2, requires_grad=True)
    assert autograd_needed(plain, None, 3.0, tracked)
    assert not autograd_needed(plain, None, 3.0)
    with torch.no_grad():
        assert not autograd_needed(tracked)


def test_apply_function_records_only_when_needed():
    x = torch.arange(3.0)
    _Scale.calls.clear()
    out = apply_function(_Scale, x, 2.0)
    assert torch.equal(out, x * 2) and not out.requires_grad
    tracked = x.clone().requires_grad_()
    out = apply_function(_Scale, tracked, 2.0)
    out.sum().backward()
    assert torch.equal(tracked.grad, torch.full((3,), 2.0))
    with torch.no_grad():
        assert torch.equal(apply_function(_Scale, tracked, 2.0), x * 2)
    assert _Scale.calls == [False, True, False]
