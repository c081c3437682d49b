"""The dummy architecture's record: all the platform learns about it (registered by tests/test_dummy.py)."""

from hatchlings.architectures import ArchitectureRecord

from .configuration_dummy import DummyConfig
from .modeling_dummy import DummyForCausalLM, DummyModel

RECORD = ArchitectureRecord(
    arch="dummy",
    config_class=DummyConfig,
    model_class=DummyModel,
    causal_lm_class=DummyForCausalLM,
    summary=("A test-only Llama-like decoder (RMSNorm, RoPE, SwiGLU, softmax attention with a KV cache) that "
             "proves an architecture plugs into hatchlings through its record alone."),
    arena_shape=lambda width: dict(hidden_size=width, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=11 * width // 4),
    tokenizer="byte",
    reference="dummy_arch.reference_dummy:reference_logits",
    lora={"target_modules": ["q_proj", "v_proj"]},
)
