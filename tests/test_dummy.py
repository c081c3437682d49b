"""The dummy fifth architecture (tests/dummy_arch/): registered through its record alone, it passes the whole
contract (tests/checks_*.py), the reference check, the platform end-to-end check and the clean-room load."""

from __future__ import annotations

from contract import ArchSpec, make_contract_tests
from dummy_arch.configuration_dummy import DummyConfig
from dummy_arch.record import RECORD
from hatchlings.architectures import register_architecture

register_architecture(RECORD)

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)

SPEC = ArchSpec(
    arch="dummy",
    tiny_config=lambda **overrides: DummyConfig(**{**TINY, **overrides}),
    modeling_files=("modeling_dummy.py", "configuration_dummy.py"),
    invalid_configs=(
        ({"hidden_size": 0}, "hidden_size"),
        ({"num_attention_heads": 3}, "num_attention_heads"),
        ({"rope_theta": -1.0}, "rope_theta"),
        ({"vocab_size": 100}, "pad_token_id"),
    ),
    causal_length=16,
    plain_path={"fused_attention": False},
    fast_path_ops=("ScaledDotProductFlashAttentionForCpuBackward0",),
)

globals().update(make_contract_tests(SPEC))
