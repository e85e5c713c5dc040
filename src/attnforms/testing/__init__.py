"""Shared by the tests, `attnforms check` and the benchmark: one input factory per
family and the noise-relative error rule."""
from .inputs import aaren_inputs, gated_delta_inputs, mlstm_inputs, softmax_inputs
from .tolerance import NoiseCheck, max_error, noise_relative_check
