"""Numeric constants and dispatch thresholds, named once so no module hides a magic number."""

# Tokens per chunk in the chunk form when the caller gives no `chunk_size`.
# 64 is what the delta-rule literature and flash-linear-attention use: large enough for
# matrix products to dominate, small enough that the in-chunk triangular solve stays cheap.
DEFAULT_CHUNK_SIZE = 64

# `form="auto"` picks the recurrent form for inputs this short (single-token decoding):
# there is nothing to parallelise over and the recurrent form carries the least overhead.
AUTO_RECURRENT_MAX_T = 1

# mLSTM adds this to the normaliser before dividing (the value mlstm_kernels uses), so
# that outputs compare directly with that library.
MLSTM_EPS = 1e-6

# States of the recurrent families are kept in at least this precision, whatever the
# input dtype: a bf16 state loses the small updates a long sequence is made of.
STATE_DTYPE = "float32"
