"""kernels/host.py: the launchers' integer helpers agree with triton's, and the
autograd test follows torch's grad mode."""
import torch
import triton

from attnforms.kernels.host import autograd_needed, cdiv, next_power_of_2


def test_integer_helpers_match_triton():
    for n in range(1, 600):
        assert next_power_of_2(n) == triton.next_power_of_2(n)
        for d in (1, 7, 16, 64):
            assert cdiv(n, d) == triton.cdiv(n, d)


def test_autograd_needed_follows_grad_mode():
    plain, tracked = torch.zeros(2), torch.zeros(2, requires_grad=True)
    assert autograd_needed(plain, None, tracked)
    assert not autograd_needed(plain, None)
    with torch.no_grad():
        assert not autograd_needed(tracked)
