"""BDH's record: what the platform needs to know about the Baby Dragon Hatchling."""

from ..modeling.configuration_bdh import BdhConfig
from ..modeling.modeling_bdh import BdhForCausalLM, BdhModel
from . import ArchitectureRecord

RECORD = ArchitectureRecord(
    arch="bdh",
    config_class=BdhConfig,
    model_class=BdhModel,
    causal_lm_class=BdhForCausalLM,
    summary=("BDH (Baby Dragon Hatchling; Kosowski et al., 2025): one block of weights shared by every layer, "
             "sparse positive ReLU neurons, and a linear attention whose running sum is a Hebbian synaptic "
             "state, so generation costs the same per token at any context length."),
    # 4 layers and heads like the arena's baselines; 16x neurons per head land within 10% of GPT-2's size
    arena_shape=lambda width: dict(hidden_size=width, num_hidden_layers=4, num_attention_heads=4,
                                   mlp_internal_dim_multiplier=16, dropout=0.0),
    tokenizer="byte",
    reference="hatchlings.reference.bdh:reference_logits",
    # the per-head neuron tensors are raw parameters, not nn.Linear: LoRA reaches them by name
    lora={"target_parameters": ["block.encoder", "block.encoder_v", "block.decoder"]},
    probes={name: f"hatchlings.probes.{name}:run" for name in ("sparsity", "neurons", "state", "merge", "scaling")},
)
