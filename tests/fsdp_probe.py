"""Run by tests/test_fsdp.py under `accelerate launch`: trains like train.py and records per rank what the
model was during training (wrapper class, parameter types, elements held locally), so the test can tell a
sharded run from a silent DDP fallback."""

import json
import os
import sys

from transformers import TrainerCallback

import hatchlings.training.run as run


class Report(TrainerCallback):
    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == state.max_steps:  # inside training: FSDP2 has replaced the parameters by shards
            self.seen = {"wrapper": type(model).__name__,
                         "parameters": sorted({type(p).__name__ for p in model.parameters()}),
                         "local_numel": sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel()
                                            for p in model.parameters())}

    def on_train_end(self, args, state, control, **kwargs):
        report = {"world": args.world_size, "steps": state.global_step, **self.seen}
        with open(os.path.join(os.environ["PROBE_DIR"], f"rank{args.process_index}.json"), "w") as f:
            json.dump(report, f)


if __name__ == "__main__":
    run.run_training(sys.argv[1:], callbacks=[Report()])
