"""The Hybrid Hopfield-SSM's record: what the platform needs to know about it (seed 002)."""

from ..modeling.configuration_hybrid import HybridConfig
from ..modeling.modeling_hybrid import HybridForCausalLM, HybridModel
from . import ArchitectureRecord

RECORD = ArchitectureRecord(
    arch="hybrid",
    config_class=HybridConfig,
    model_class=HybridModel,
    causal_lm_class=HybridForCausalLM,
    summary=("Hybrid Hopfield-SSM: every block runs a gated selective-scan SSM, a modern-Hopfield retrieval over "
             "a learned memory (several refinement steps mixed by a learned gate) and causal softmax attention "
             "side by side, mixed per token by a learned softmax gate; the block stack runs in segments, a "
             "controller biasing the next segment's mixing from the previous segment's (detached) states."),
    arena_shape=lambda width: dict(hidden_size=width, num_hidden_layers=3, num_attention_heads=4,
                                   intermediate_size=width, max_position_embeddings=2080,
                                   ssm_state_size=8, ssm_dt_rank=8, num_memories=32, mixer_hidden_size=32,
                                   controller_hidden_size=32, tie_word_embeddings=True),
    tokenizer="byte",
    reference="hatchlings.reference.hybrid:reference_logits",
    lora={"target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "fc_in", "fc_out"]},
)
