"""Plain-equation references of every architecture, one module each, named in its record (`reference`).

A reference is `reference_logits(model, input_ids) -> logits`: the architecture's equations written from the
math, per time step where the math is recurrent, with no fused kernels, chunking or hand-written autograd,
taking only the weights from the model. The contract (tests/checks_reference.py) compares every model's
logits and gradients with its reference; benchmarks time against it.
"""
