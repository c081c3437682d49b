"""Train a hatchlings model: `python -m hatchlings.train --config bdh-tiny [--flag value ...]`.

A module, not only a script, so that an installed wheel (which has no train.py) runs data-parallel too:
`accelerate launch -m hatchlings.train --config bdh-tiny ...`, or `torchrun -m hatchlings.train ...`. The
checkout's train.py and `hatchlings train` run the very same code; the flags are train.py's.
"""

from __future__ import annotations

import sys

from .cli import main as cli_main


def main(argv: list[str] | None = None, prog: str = "python -m hatchlings.train") -> int:
    """Run `hatchlings train` on `argv` (default: this process's arguments); `prog` is the name its --help shows."""
    argv = sys.argv[1:] if argv is None else argv
    return cli_main(["train", *argv], train_prog=prog)


if __name__ == "__main__":
    raise SystemExit(main())
