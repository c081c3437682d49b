"""Hebbian seed initialisation (Haykin ch. 2 and 8): token embeddings from co-occurrence statistics via Oja's rule.

Before gradient descent, HRAN's seed set its embeddings from the corpus: a token is described by the tokens
around it, and Oja's Hebbian rule, a single neuron's w += lr * y (x - y w) with y = w.x, converges to the
principal direction of its inputs. With k neurons, Sanger's generalisation (the generalised Hebbian algorithm,
each neuron learning from what the earlier ones left unexplained) converges to the top k principal directions,
in order. Projecting every token's co-occurrence profile on them gives k-dimensional embeddings in which tokens
that share contexts lie close.

Any architecture with an input embedding can use it (it reads only token ids and writes a V x D matrix); it is
a training step, not a model component, so it lives here and not in hatchlings/modeling/.
"""

from __future__ import annotations

from typing import Iterable

import torch


def oja_principal_components(X: torch.Tensor, k: int, steps: int = 2000, lr: float = 0.05, batch_size: int = 64,
                             seed: int = 0) -> torch.Tensor:
    """The top-k principal directions of the rows of X (N, n), learned by Oja's/Sanger's Hebbian rule.

    Per step, on a mini-batch x (B, n) of centred rows and outputs y = x W (B, k):
        dW = lr * (x^T y - W triu(y^T y)) / B
    (k = 1 is Oja's rule; the upper triangle makes output j unlearn only what outputs i <= j explain, so the
    columns come out ordered by variance). X is centred and scaled to unit mean squared row norm first, so `lr`
    means the same whatever the data's scale; the rate decays linearly to a tenth over `steps`.
    Returns W (n, k) with approximately orthonormal columns (their signs are arbitrary).
    """
    if X.dim() != 2 or not 1 <= k <= X.shape[1]:
        raise ValueError(f"need X of shape (N, n) and 1 <= k <= n, got X {tuple(X.shape)} and k={k}")
    g = torch.Generator().manual_seed(seed)
    X = X.float()  # float32: the rule averages its own noise; float64 only doubles the cost
    X = X - X.mean(0)
    X = X / X.pow(2).sum(1).mean().sqrt().clamp(min=1e-12)
    W = torch.randn(X.shape[1], k, generator=g)
    W /= W.norm(dim=0)
    for step in range(steps):
        x = X[torch.randint(0, X.shape[0], (batch_size,), generator=g)]  # (B, n)
        y = x @ W  # (B, k)
        rate = lr * (1 - 0.9 * step / max(steps - 1, 1))
        W += rate * (x.T @ y - W @ torch.triu(y.T @ y)) / batch_size
    return W


def co_occurrence(sequences: Iterable[torch.Tensor], vocab_size: int, window: int = 2) -> torch.Tensor:
    """Symmetric counts C[a, b] of tokens a and b at most `window` positions apart within a sequence: (V, V)."""
    pairs = []  # flat indices a * V + b of every (token, later token) pair; one bincount over all of them
    for ids in sequences:
        ids = torch.as_tensor(ids).long().flatten()
        pairs += [ids[:-offset] * vocab_size + ids[offset:] for offset in range(1, window + 1) if ids.numel() > offset]
    flat = torch.cat(pairs) if pairs else torch.zeros(0, dtype=torch.long)
    C = torch.bincount(flat, minlength=vocab_size * vocab_size).double().view(vocab_size, vocab_size)
    return C + C.T


def hebbian_seed_embeddings(token_ids: torch.Tensor | Iterable[torch.Tensor], vocab_size: int, dim: int,
                            window: int = 2, std: float = 0.02, steps: int = 2000, lr: float = 0.05,
                            seed: int = 0) -> torch.Tensor:
    """Seed embeddings (vocab_size, dim) from the co-occurrence statistics of `token_ids` via Oja's rule.

    token_ids: one 1-D tensor of ids, or an iterable of sequences (windows never cross sequences). Each seen
    token's profile is the row log(1 + C[a]) normalised to unit length; Oja/Sanger learns the top `dim`
    principal directions of these profiles and every token's embedding is its centred profile projected on
    them, scaled so the entries have standard deviation `std` (the model's initializer_range keeps the usual
    init scale). Tokens never seen keep a plain normal(0, std) init.
    """
    sequences = [token_ids] if isinstance(token_ids, torch.Tensor) else list(token_ids)
    C = co_occurrence(sequences, vocab_size, window)
    seen = C.sum(1) > 0  # (V,)
    if int(seen.sum()) < 2:
        raise ValueError("hebbian_seed_embeddings needs at least two distinct co-occurring tokens")
    if dim > vocab_size:
        raise ValueError(f"dim={dim} exceeds vocab_size={vocab_size}: there are only {vocab_size} directions")
    profiles = torch.log1p(C[seen])
    profiles = profiles / profiles.norm(dim=1, keepdim=True)  # (n_seen, V)
    W = oja_principal_components(profiles, k=dim, steps=steps, lr=lr, seed=seed).double()  # (V, dim)
    projected = (profiles - profiles.mean(0)) @ W  # (n_seen, dim)
    projected = projected / projected.std().clamp(min=1e-12) * std
    g = torch.Generator().manual_seed(seed)
    E = torch.randn(vocab_size, dim, generator=g, dtype=torch.float64) * std
    E[seen] = projected
    return E.float()


def seed_input_embeddings(model, rows, seed: int = 0, max_rows: int = 2000) -> str:
    """`optimization.hebbian_seed`: overwrite a new model's input embeddings with `hebbian_seed_embeddings` of
    its training rows (the first `max_rows`, real tokens only), at the embedding's own scale, before any
    gradient step. Returns the line train.py prints. Any architecture with an input embedding can use it.
    """
    embedding = model.get_input_embeddings()
    sequences = []
    for i, row in enumerate(rows):
        if i == max_rows:
            break
        ids, mask = torch.as_tensor(row["input_ids"]), row.get("attention_mask")
        sequences.append(ids[torch.as_tensor(mask).bool()] if mask is not None else ids)
    vocab, dim = embedding.weight.shape
    E = hebbian_seed_embeddings(sequences, vocab, dim, std=float(embedding.weight.detach().std()), seed=seed)
    with torch.no_grad():
        embedding.weight.copy_(E.to(embedding.weight.dtype))
    return (f"hebbian seed: input embeddings ({vocab} x {dim}) from the co-occurrences of {len(sequences)} "
            "training rows (Oja/Sanger)")


__all__ = ["co_occurrence", "hebbian_seed_embeddings", "oja_principal_components", "seed_input_embeddings"]
