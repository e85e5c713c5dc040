"""kernels/row_dot.py against torch's own rowsum, in both output layouts."""
import pytest
import torch

from attnforms.kernels.row_dot import row_dot


@pytest.mark.parametrize("D", [1, 60, 128])
@pytest.mark.parametrize("heads_first", [True, False])
def test_row_dot_matches_torch(D, heads_first):
    gen = torch.Generator().manual_seed(D)
    a = torch.randn(2, 37, 3, D, generator=gen).to(torch.bfloat16)  # 16-bit, as dO
    b = torch.randn(2, 37, 3, D, generator=gen)  # float32, as the mLSTM's output
    expected = (a.double() * b.double()).sum(-1).reshape(2 * 37, 3)
    if heads_first:
        expected = expected.t()
    got = row_dot(a, b, heads_first=heads_first)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


def test_row_dot_refuses_different_shapes():
    with pytest.raises(ValueError, match="shapes differ"):
        row_dot(torch.zeros(2, 3, 4), torch.zeros(2, 3, 5), heads_first=True)
