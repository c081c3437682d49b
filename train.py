"""Train a hatchlings model from a checkout: `python train.py --config bdh-tiny [--flag value ...]`.

The same command runs data-parallel under `accelerate launch` or `torchrun` with no code change. All the work
is in hatchlings.train (`python -m hatchlings.train`, which an installed wheel has too); this file only keeps
the checkout's short command working.
"""

from hatchlings.train import main

if __name__ == "__main__":
    raise SystemExit(main(prog="train.py"))
