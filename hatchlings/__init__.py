"""hatchlings: brain-inspired language models as first-class Hugging Face Transformers models.

`import hatchlings` registers every architecture with AutoConfig / AutoModel / AutoModelForCausalLM.
"""

from .modeling import ARCHITECTURES, BdhConfig, BdhForCausalLM, BdhModel, RecurrentStateCache, config_class_for

__version__ = "0.1.0"


def __getattr__(name: str):
    """`hatchlings.merge_bdh`, imported on first use (the probes pull in plotting and numpy)."""
    if name == "merge_bdh":
        from .probes.merge import merge_bdh

        return merge_bdh
    raise AttributeError(f"module 'hatchlings' has no attribute {name!r}")


__all__ = ["ARCHITECTURES", "BdhConfig", "BdhForCausalLM", "BdhModel", "RecurrentStateCache", "config_class_for",
           "merge_bdh", "__version__"]
