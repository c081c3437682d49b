"""The modeling classes of every hatchlings architecture.

This folder holds only what a saved model needs at load time (its files are copied into every export).
Registration with the Auto classes, and everything else the platform knows about an architecture, lives in
its record (hatchlings/architectures/).
"""

from .cache import RecurrentStateCache
from .configuration_bdh import BdhConfig
from .modeling_bdh import BdhForCausalLM, BdhModel

__all__ = ["BdhConfig", "BdhForCausalLM", "BdhModel", "RecurrentStateCache"]
