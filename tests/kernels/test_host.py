"""kernels/host.py: the launchers' integer helpers agree with triton's."""
import triton

from attnforms.kernels.host import cdiv, next_power_of_2


def test_integer_helpers_match_triton():
    for n in range(1, 600):
        assert next_power_of_2(n) == triton.next_power_of_2(n)
        for d in (1, 7, 16, 64):
            assert cdiv(n, d) == triton.cdiv(n, d)
