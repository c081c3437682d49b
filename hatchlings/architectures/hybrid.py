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
    # 3 layers, not the baselines' 4: the learned position table (8 x width + 32 rows: 1,056 at width 128, so
    # generation is timed to context 1024) takes what a 4th layer would; within 8% of GPT-2 at every arena size
    arena_shape=lambda width: dict(hidden_size=width, num_hidden_layers=3, num_attention_heads=4,
                                   intermediate_size=2 * width, max_position_embeddings=8 * width + 32,
                                   ssm_state_size=8, ssm_dt_rank=8, num_memories=32, mixer_hidden_size=32,
                                   controller_hidden_size=32, tie_word_embeddings=True),
    tokenizer="byte",
    reference="hatchlings.reference.hybrid:reference_logits",
    lora={"target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "fc_in", "fc_out"]},
    # the seed's tables, reproduced at evaluation time on a trained export
    probes={name: f"hatchlings.probes.hybrid:{name}" for name in ("ablate", "shuffle", "segments", "controller", "gates")},
)
