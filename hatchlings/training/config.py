"""Run presets: a YAML file (model config + data + TrainingArguments) with command-line overrides.

A preset has four sections, every key checked so a typo fails at start-up rather than being ignored:

    architecture: bdh
    model:      {hidden_size: 128, ...}            # fields of the architecture's config class
    data:       {block_size: 256, ...}             # DataConfig fields
    training:   {max_steps: 300, ...}              # any transformers.TrainingArguments field
    generation: {prompt: "...", max_new_tokens: 200}  # the sample printed after training
    optimization: {name: muon, wiener_snr: true, label_smoothing: 0.1, ema_decay: 0.999, ...}  # optional
    card:       {license: apache-2.0, datasets: [karpathy/tiny_shakespeare]}  # optional Hub metadata
    tokenizer:  {kind: bpe, vocab_size: 4096, min_frequency: 2}  # optional; default: the architecture's kind
    lora:       {r: 8, alpha: 16, targets: [q_proj, v_proj]}  # optional: train a LoRA adapter (needs peft)

`--tokenizer KIND`, `--vocab_size N` and `--min_frequency N` override the tokenizer section.
On the command line, `--train_file`, `--validation_file` and the other DataConfig fields override the
data section, and every other `--flag value` is a TrainingArguments flag (parsed by Transformers' own
HfArgumentParser, after the YAML values, so the command line wins).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch
import yaml
from transformers import HfArgumentParser, TrainingArguments

from ..architectures import config_class_for
from ..tokenization import TOKENIZER_KINDS
from .adapters import LoraSettings, add_lora_flags, lora_settings
from .text import DataConfig
from ..errors import UsageError
from .optim import OptimConfig


@dataclasses.dataclass
class RunConfig:
    architecture: str
    model: dict
    data: DataConfig
    training: TrainingArguments
    generation: dict
    optimization: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    card: dict = dataclasses.field(default_factory=dict)  # license, datasets (Hub ids) for the model card
    resume: bool = False  # continue from the newest checkpoint in output_dir
    init_from: str | None = None  # start from the weights and tokenizer of an exported model folder
    tokenizer: TokenizerConfig = dataclasses.field(default_factory=lambda: TokenizerConfig())
    lora: LoraSettings = dataclasses.field(default_factory=LoraSettings)  # r > 0: train a LoRA adapter only


@dataclasses.dataclass
class TokenizerConfig:
    """Which tokenizer a fresh run builds (byte, char, word, bpe) and its vocabulary's limits.

    kind None: the architecture record's kind, or with --init_from the export's own tokenizer."""

    kind: str | None = None
    vocab_size: int | None = None  # word and bpe: the cap, specials included
    min_frequency: int | None = None  # char, word, bpe: rarer characters/words are left out

    def __post_init__(self):
        if self.kind is not None and self.kind not in TOKENIZER_KINDS:
            raise UsageError(f"tokenizer.kind must be one of {', '.join(TOKENIZER_KINDS)}, got {self.kind!r}")
        for name in ("vocab_size", "min_frequency"):
            value = getattr(self, name)
            if value is None:
                continue
            try:
                setattr(self, name, int(value))
            except (TypeError, ValueError):
                raise UsageError(f"tokenizer.{name} must be a whole number, got {value!r}") from None


SECTIONS = {"architecture", "model", "data", "training", "generation", "optimization", "card", "tokenizer",
            "lora"}
CARD_KEYS = {"license", "datasets"}  # Hub metadata of the exported model card
GENERATION_KEYS = {"prompt", "max_new_tokens", "temperature", "top_k"}


def _check_keys(section: str, given: dict, allowed: set[str], source: str) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise UsageError(f"{source}: unknown key(s) in '{section}': {', '.join(unknown)}")


def _to_flags(values: dict) -> list[str]:
    """TrainingArguments values from YAML as CLI flags, so one parser handles YAML and overrides alike."""
    flags = []
    for key, value in values.items():
        if isinstance(value, list):
            flags += [f"--{key}", *map(str, value)]
        elif value is not None:
            flags += [f"--{key}", str(value)]
    return flags


def presets_dir() -> Path:
    """The folder of shipped presets: hatchlings/presets/ in a wheel (the build maps configs/ there, see
    pyproject.toml), else configs/ beside the package in a checkout or editable install."""
    package = Path(__file__).resolve().parents[1]
    shipped = package / "presets"
    return shipped if shipped.is_dir() else package.parent / "configs"


def preset_names() -> list[str]:
    """The names `--config` accepts instead of a path (`bdh-tiny` for configs/bdh-tiny.yaml)."""
    folder = presets_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def resolve_preset(config: str) -> Path:
    """`--config` as a file: an existing path as given, else a bare name (`bdh-tiny` or `bdh-tiny.yaml`) looked
    up among the shipped presets, so a wheel user, who has no configs/ folder, can still name one."""
    path = Path(config)
    if path.is_file():
        return path
    if path.name == config:  # no folder part: a preset name
        shipped = presets_dir() / (config if config.endswith(".yaml") else f"{config}.yaml")
        if shipped.is_file():
            return shipped
    raise UsageError(f"config file not found: {config} (not a file; shipped presets, usable by name: "
                     f"{', '.join(preset_names()) or 'none'})")


def load_preset(path: str | None) -> dict:
    if path is None:
        return {}
    p = resolve_preset(path)
    try:
        preset = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        raise UsageError(f"{path}: invalid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(preset, dict):
        raise UsageError(f"{path}: expected a mapping with sections {sorted(SECTIONS)}")
    _check_keys("top level", preset, SECTIONS, path)
    return preset


def parse_run_config(argv: list[str], prog: str = "train.py") -> RunConfig:
    """Build the run from `--config preset.yaml` plus overrides; raise UsageError on anything wrong.

    `prog` is the command the user typed (`hatchlings train` or `train.py`), for --help and usage errors."""
    parser = argparse.ArgumentParser(prog=prog, add_help=True, allow_abbrev=False,
                                     description="Train a hatchlings model (any TrainingArguments flag is accepted).")
    parser.add_argument("--config", help=f"YAML file, or a preset by name: {', '.join(preset_names())}")
    parser.add_argument("--architecture", help="architecture id (overrides the preset)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    parser.add_argument("--init_from", help="exported model folder to start from (continual learning)")
    parser.add_argument("--tokenizer", dest="tokenizer_kind", help=f"tokenizer kind: {', '.join(TOKENIZER_KINDS)}")
    parser.add_argument("--vocab_size", dest="tokenizer_vocab_size", help="word/bpe vocabulary cap")
    parser.add_argument("--min_frequency", dest="tokenizer_min_frequency", help="char/word/bpe: drop rarer entries")
    for field in dataclasses.fields(DataConfig):
        if isinstance(field.default, bool):  # a switch: `--allow_binary` alone turns it on
            parser.add_argument(f"--{field.name}", action="store_true", default=None)
        else:
            parser.add_argument(f"--{field.name}", nargs="+" if field.name.endswith("_file") else None,
                                default=None)
    for field in dataclasses.fields(OptimConfig):  # `name` is --optimizer: --optim is TrainingArguments'
        parser.add_argument("--optimizer" if field.name == "name" else f"--{field.name}", dest=f"optimization_{field.name}",
                            default=None)
    add_lora_flags(parser)
    args, rest = parser.parse_known_args(argv)
    preset = load_preset(args.config)
    source = args.config or "command line"

    if args.init_from and not (Path(args.init_from) / "config.json").is_file():
        raise UsageError(f"--init_from: not an exported model folder (no config.json): {args.init_from}")
    arch = args.architecture or preset.get("architecture") or (_exported_architecture(args.init_from)
                                                                if args.init_from else None)
    if not arch:
        raise UsageError("no architecture: give --config with an 'architecture' key or --architecture")
    try:
        config_cls = config_class_for(arch)
    except ValueError as err:
        raise UsageError(str(err)) from None
    model = dict(preset.get("model") or {})
    _check_keys("model", model, {f.name for f in dataclasses.fields(config_cls)}, source)

    data_values = dict(preset.get("data") or {})
    _check_keys("data", data_values, {f.name for f in dataclasses.fields(DataConfig)}, source)
    for field in dataclasses.fields(DataConfig):
        override = getattr(args, field.name)
        if override is not None:
            data_values[field.name] = override if field.name.endswith("_file") else type(field.default)(override)
    data = DataConfig(**data_values)

    training_values = dict(preset.get("training") or {})
    _check_keys("training", training_values, {f.name for f in dataclasses.fields(TrainingArguments)}, source)
    # without an accelerator, Trainer under `accelerate launch` quietly runs each process as its own world of
    # size 1 unless use_cpu is set: default it on (a preset or flag can still say otherwise)
    defaults = [] if torch.accelerator.is_available() else ["--use_cpu", "true"]
    training = _parse_training_args(defaults + _to_flags(training_values) + rest)
    if training.include_num_input_tokens_seen == "no":  # the card's "tokens seen": the real tokens trained on
        training.include_num_input_tokens_seen = "non_padding"

    optimization = dict(preset.get("optimization") or {})
    _check_keys("optimization", optimization, {f.name for f in dataclasses.fields(OptimConfig)}, source)
    for field in dataclasses.fields(OptimConfig):
        if getattr(args, f"optimization_{field.name}") is not None:
            optimization[field.name] = getattr(args, f"optimization_{field.name}")

    card = dict(preset.get("card") or {})
    _check_keys("card", card, CARD_KEYS, source)

    generation = dict(preset.get("generation") or {})
    _check_keys("generation", generation, GENERATION_KEYS, source)
    return RunConfig(arch, model, data, training, generation, OptimConfig(**optimization), card=card,
                     resume=args.resume, init_from=args.init_from,
                     tokenizer=_tokenizer_config(preset, args, source),
                     lora=lora_settings(preset.get("lora") or {}, args, source))


def _tokenizer_config(preset: dict, args, source: str) -> TokenizerConfig:
    """The tokenizer section with its flags applied; with --init_from only `kind` may be given (to check it)."""
    values = dict(preset.get("tokenizer") or {})
    _check_keys("tokenizer", values, {f.name for f in dataclasses.fields(TokenizerConfig)}, source)
    for field in dataclasses.fields(TokenizerConfig):
        if getattr(args, f"tokenizer_{field.name}") is not None:
            values[field.name] = getattr(args, f"tokenizer_{field.name}")
    tokenizer = TokenizerConfig(**values)
    if args.init_from and (tokenizer.vocab_size or tokenizer.min_frequency):
        raise UsageError("--init_from continues with the exported tokenizer: remove vocab_size and min_frequency")
    return tokenizer


def _exported_architecture(folder: str) -> str:
    """The architecture id of an exported model: its model_type without the `hatchlings_` prefix."""
    return json.loads((Path(folder) / "config.json").read_text()).get("model_type", "").removeprefix("hatchlings_")


def _parse_training_args(flags: list[str]) -> TrainingArguments:
    parser = HfArgumentParser(TrainingArguments)
    try:
        training, unknown = parser.parse_args_into_dataclasses(args=flags, return_remaining_strings=True)
    except SystemExit:
        raise UsageError(f"invalid training arguments: {' '.join(flags)}") from None
    except ValueError as err:
        raise UsageError(f"invalid training arguments: {err}") from None
    if unknown:
        raise UsageError(f"unknown argument(s): {' '.join(unknown)}")
    if training.max_steps == 0 or training.max_steps < -1:  # Transformers would quietly train by epochs
        raise UsageError(f"--max_steps must be a positive number of steps, or -1 to train for "
                         f"num_train_epochs, got {training.max_steps}")
    return training
