"""The mLSTM family: xLSTM's matrix memory with an exponential or a sigmoid input gate."""
from .api import FAMILY, mlstm
