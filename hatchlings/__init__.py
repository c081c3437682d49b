"""hatchlings: brain-inspired language models as first-class Hugging Face Transformers models.

`import hatchlings` registers every architecture (its record, hatchlings/architectures/) with AutoConfig /
AutoModel / AutoModelForCausalLM.
"""

from .architectures import RECORDS, config_class_for, record_for, register_architecture
from .modeling import BdhConfig, BdhForCausalLM, BdhModel, RecurrentStateCache
from .modeling.merge_bdh import average_bdh, merge_bdh

__version__ = "0.1.0"


__all__ = ["RECORDS", "BdhConfig", "BdhForCausalLM", "BdhModel", "RecurrentStateCache", "average_bdh",
           "config_class_for", "merge_bdh", "record_for", "register_architecture", "__version__"]
