"""Training platform shared by every architecture: presets, data, Trainer, export."""

from .config import DataConfig, RunConfig, UsageError, parse_run_config
from .run import build_model, run_training, sample

__all__ = ["DataConfig", "RunConfig", "UsageError", "build_model", "parse_run_config", "run_training", "sample"]
