"""Every hatchlings architecture, registered with the Transformers Auto classes.

Importing this package makes `AutoConfig.for_model("hatchlings_bdh")` and
`AutoModelForCausalLM.from_config(...)` work, and marks each class for `register_for_auto_class`
so that `save_pretrained` writes `auto_map` into config.json and copies the modeling files next to the
weights: the saved folder then loads with `trust_remote_code=True` where hatchlings is not installed.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .cache import RecurrentStateCache
from .configuration_bdh import BdhConfig
from .modeling_bdh import BdhForCausalLM, BdhModel

# architecture id -> (config class, base model class, causal-LM class)
ARCHITECTURES = {
    "bdh": (BdhConfig, BdhModel, BdhForCausalLM),
}


def _register() -> None:
    for config_cls, model_cls, lm_cls in ARCHITECTURES.values():
        AutoConfig.register(config_cls.model_type, config_cls, exist_ok=True)
        AutoModel.register(config_cls, model_cls, exist_ok=True)
        AutoModelForCausalLM.register(config_cls, lm_cls, exist_ok=True)
        config_cls.register_for_auto_class()
        model_cls.register_for_auto_class("AutoModel")
        lm_cls.register_for_auto_class("AutoModelForCausalLM")


def config_class_for(arch: str):
    """The config class of an architecture id, or a ValueError that lists the known ids."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[arch][0]


_register()

__all__ = ["ARCHITECTURES", "BdhConfig", "BdhForCausalLM", "BdhModel", "RecurrentStateCache", "config_class_for"]
