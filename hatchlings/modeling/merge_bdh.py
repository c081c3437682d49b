"""Merging BDH models by concatenating their neurons (`merge_bdh`), and plain weight averaging to compare with.

The BDH paper's claim: two models grown from the same start and trained on different data can be merged
by putting their neurons side by side. A BDH head's neurons interact only through sums over neurons --
attention scores <q_t, q_s> = sum_i q_t,i q_s,i and the decoder z = sum_i (x_i * y_i) dec_i -- so the merged
model computes each parent's terms and adds them: scores_a + scores_b, z_a + z_b. The shared D-dimensional
parts (embedding, LM head) are averaged. The merged model is a normal BdhForCausalLM with twice the neurons
(`rope_period` keeps each parent neuron at the rotary frequency it was trained with), so it saves, loads and
generates like any other. It lives beside the model because it is an operation on BDH's weights; whether the
merge *works* is what `hatchlings probe bdh merge` (hatchlings/probes/merge.py) measures.
"""

from __future__ import annotations

import torch


SHARED_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "rope_theta",
                 "layer_norm_eps", "rotary_period")


def _check_mergeable(a, b) -> None:
    for model in (a, b):
        if model.config.model_type != "hatchlings_bdh":
            raise ValueError(f"merge_bdh merges BDH models, got a {model.config.model_type!r} model")
    differ = [f"{name} ({getattr(a.config, name)} vs {getattr(b.config, name)})" for name in SHARED_FIELDS
              if getattr(a.config, name) != getattr(b.config, name)]
    if differ:
        raise ValueError("merge_bdh needs models of the same shape apart from their neurons; they differ in "
                         + ", ".join(differ))


def _derived(a, **changes):
    """A fresh BDH of `a`'s class and config with `changes` (validated by the config class)."""
    config = type(a.config).from_dict({**a.config.to_dict(), **changes})
    return type(a)(config).to(dtype=a.dtype, device=a.device).eval()


def merge_bdh(a, b):
    """The BDH whose neurons are `a`'s followed by `b`'s (per head); embedding and LM head averaged.

    Encoder and encoder_v (H, D, N) are concatenated along N, the decoder (H*N, D) along each head's neurons,
    so head h of the result holds N_a + N_b neurons. Returns a new model in eval mode; a and b are unchanged.
    """
    _check_mergeable(a, b)
    H, D = a.config.num_attention_heads, a.config.hidden_size
    merged = _derived(a, mlp_internal_dim_multiplier=a.config.mlp_internal_dim_multiplier
                      + b.config.mlp_internal_dim_multiplier, rope_period=a.config.rotary_period)
    pa, pb = a.model.block, b.model.block
    decoders = [block.decoder.view(H, -1, D) for block in (pa, pb)]  # (H, N, D) each
    with torch.no_grad():
        merged.model.block.encoder.copy_(torch.cat([pa.encoder, pb.encoder], dim=-1))  # (H, D, Na + Nb)
        merged.model.block.encoder_v.copy_(torch.cat([pa.encoder_v, pb.encoder_v], dim=-1))
        merged.model.block.decoder.copy_(torch.cat(decoders, dim=1).reshape(-1, D))  # (H * (Na + Nb), D)
        merged.model.embed_tokens.weight.copy_((a.model.embed_tokens.weight + b.model.embed_tokens.weight) / 2)
        merged.lm_head.weight.copy_((a.lm_head.weight + b.lm_head.weight) / 2)
    return merged


def average_bdh(a, b):
    """The usual alternative to merging: every weight the mean of a's and b's (same shape as a)."""
    _check_mergeable(a, b)
    if a.config.neurons_per_head != b.config.neurons_per_head:
        raise ValueError("average_bdh needs the same number of neurons in both models")
    averaged = _derived(a)
    with torch.no_grad():
        for (name, p), q in zip(averaged.named_parameters(), b.parameters()):
            p.copy_((a.get_parameter(name) + q) / 2)
    return averaged
