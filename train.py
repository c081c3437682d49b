"""Train a hatchlings model: `python train.py --config configs/bdh-tiny.yaml [--flag value ...]`.

The same command runs data-parallel under `accelerate launch` or `torchrun` with no code change.
"""

from hatchlings.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["train", *__import__("sys").argv[1:]]))
