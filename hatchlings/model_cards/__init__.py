"""Hub model cards built from measured facts, and the loss-curve image they embed."""

from .card import build_model_card, plot_loss_curve

__all__ = ["build_model_card", "plot_loss_curve"]
