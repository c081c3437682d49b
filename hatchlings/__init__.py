"""hatchlings: brain-inspired language models as first-class Hugging Face Transformers models.

`import hatchlings` registers every architecture with AutoConfig / AutoModel / AutoModelForCausalLM.
"""

from .modeling import ARCHITECTURES, BdhConfig, BdhForCausalLM, BdhModel, RecurrentStateCache, config_class_for

__version__ = "0.1.0"

__all__ = ["ARCHITECTURES", "BdhConfig", "BdhForCausalLM", "BdhModel", "RecurrentStateCache", "config_class_for",
           "__version__"]
