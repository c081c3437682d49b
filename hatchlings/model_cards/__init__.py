"""Hub model cards built from measured facts, and the loss and neuron-sparsity images they embed."""

from .card import build_model_card, last_sparsity, plot_loss_curve, plot_sparsity_curve, sparsity_log_key

__all__ = ["build_model_card", "last_sparsity", "plot_loss_curve", "plot_sparsity_curve", "sparsity_log_key"]
