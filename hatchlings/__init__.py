"""hatchlings: brain-inspired language models as first-class Hugging Face Transformers models.

`import hatchlings` registers every architecture (its record, hatchlings/architectures/) with AutoConfig /
AutoModel / AutoModelForCausalLM.
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _distribution_version

from .architectures import RECORDS, config_class_for, record_for, register_architecture
from .modeling import BdhConfig, BdhForCausalLM, BdhModel, RecurrentStateCache
from .modeling.merge_bdh import average_bdh, merge_bdh

try:  # the installed distribution's own version, so it can never disagree with pyproject.toml
    __version__ = _distribution_version("hatchlings")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"


__all__ = ["RECORDS", "BdhConfig", "BdhForCausalLM", "BdhModel", "RecurrentStateCache", "average_bdh",
           "config_class_for", "merge_bdh", "record_for", "register_architecture", "__version__"]
