"""Run by tests/test_ddp.py under `accelerate launch`: trains like train.py, and records per rank the
training batches it saw and a hash of its final weights, so the test can compare the ranks."""

import hashlib
import json
import os
import sys

from transformers import TrainerCallback

import hatchlings.training.run as run
from hatchlings.training.data import collate

SEEN: list = []


def recording_collator(features):
    batch = collate(features)
    SEEN.append(batch["input_ids"].tolist())
    return batch


class Report(TrainerCallback):
    def on_train_begin(self, args, state, control, **kwargs):
        SEEN.clear()  # only training batches count (evaluation comes after on_train_end)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        digest = hashlib.sha256()
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(name.encode() + tensor.detach().cpu().numpy().tobytes())
        report = {"rank": args.process_index, "world": args.world_size, "batches": list(SEEN),
                  "weights": digest.hexdigest(), "steps": state.global_step}
        with open(os.path.join(os.environ["PROBE_DIR"], f"rank{args.process_index}.json"), "w") as f:
            json.dump(report, f)


if __name__ == "__main__":
    run.collate = recording_collator
    run.run_training(sys.argv[1:], callbacks=[Report()])
