"""HRAN's record: what the platform needs to know about the Haykin Resonant Attention Network."""

from ..modeling.configuration_hran import HranConfig
from ..modeling.modeling_hran import HranForCausalLM, HranForConditionalGeneration, HranModel
from . import ArchitectureRecord

RECORD = ArchitectureRecord(
    arch="hran",
    config_class=HranConfig,
    model_class=HranModel,
    causal_lm_class=HranForCausalLM,
    summary=("HRAN (Haykin Resonant Attention Network): a pre-norm decoder built from Haykin's Neural Networks "
             "and Learning Machines: RBF attention softmax(-gamma ||q - k||^2) with a learned positive width per "
             "head (run on the fused attention kernel through augmented queries and keys), the infomax "
             "activation tanh(x) + alpha x, and a lateral-inhibition gate that silences feed-forward units below "
             "a learned fraction of the mean activity, giving sparse codes."),
    # 4 layers and heads like the arena's baselines; a 4x feed-forward and untied head land at GPT-2's size
    arena_shape=lambda width: dict(hidden_size=width, num_hidden_layers=4, num_attention_heads=4,
                                   intermediate_size=4 * width, tie_word_embeddings=False),
    # BPE, by measurement (`hatchlings probe hran collapse`): a ~1M-parameter model affords a ~2k vocabulary, and
    # 2,048 words learned from WikiText-2 leave half the Alpaca answer tokens <|unk|>; BPE has no unknowns
    tokenizer="bpe",
    reference="hatchlings.reference.hran:reference_logits",
    lora={"target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"]},
    probes={"collapse": "hatchlings.probes.hran_collapse:run"},  # the seed's collapse, mechanism by mechanism
    seq2seq_class=HranForConditionalGeneration,  # the seed's encoder-decoder shape, from the same layers
)

