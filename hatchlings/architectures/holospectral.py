"""HoloSpectralNet's record: what the platform needs to know about the holographic/spectral LM."""

from ..modeling.configuration_holospectral import HolospectralConfig
from ..modeling.modeling_holospectral import HolospectralForCausalLM, HolospectralModel
from . import ArchitectureRecord

RECORD = ArchitectureRecord(
    arch="holospectral",
    config_class=HolospectralConfig,
    model_class=HolospectralModel,
    causal_lm_class=HolospectralForCausalLM,
    summary=("HoloSpectralNet (after s3nh/holospectral-net, made causal): no attention. Each block binds every "
             "token to a learned key by circular convolution over its features, keeps the running mean of the "
             "bound tokens and unbinds it with a second key (holographic mixing, 2D parameters); then applies a "
             "causal long convolution over time whose kernel comes from max_seq_len/2+1 learned frequency gates; "
             "then a low-rank GELU channel mix. Generation keeps one D-vector per layer for the mixer and the "
             "gate's last max_seq_len/2 inputs: a fixed cost per token at any context. Its parameter efficiency "
             "against transformers is measured in the arena, not assumed."),
    # Token mixing costs 2D + L/2 + 1 parameters per block, so the ~0.85M budget of the arena's GPT-2 goes into
    # depth and the channel mix: 8 blocks of rank 3 * width (831,112 parameters at width 128, vocab 259).
    # max_position_embeddings 512: the gate's 257-tap kernel covers the arena's 256-token training blocks; the
    # model accepts longer contexts for the generation timings (see modeling_holospectral).
    arena_shape=lambda width: dict(hidden_size=width, num_hidden_layers=8, channel_rank=3 * width,
                                   max_position_embeddings=512),
    tokenizer="byte",
    reference="hatchlings.reference.holospectral:reference_logits",
    # the channel-mix bottleneck matrices; the mixer keys and gates are vectors (full fine-tuning or none)
    lora={"target_modules": ["down", "up"]},
    probes={"scaling": "hatchlings.probes.scaling:run"},  # the parameter ratio at equal quality
    # AdamW alone stays near the unigram plateau for most of a CPU budget (README's Muon table); the seed trains
    # with Muon, so the arena does too, at the stage-1 preset's tuned muon_lr
    arena_optimization={"name": "muon", "muon_lr": 0.03},
)
