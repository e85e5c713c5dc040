"""Backend-free foundations: validation, states, form / impl dispatch, constants."""
from .constants import DEFAULT_CHUNK_SIZE
from .dispatch import FORMS, IMPLS, Family, ImplUnavailableError, resolve_form, resolve_impl
from .states import AarenState, AttentionOutput, KVCache, LinearState, MLSTMState
