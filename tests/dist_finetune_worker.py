"""Worker for tests/test_train_distributed.py, started by `accelerate launch` (2 CPU processes, gloo).

For each branch: an uninterrupted 2-step run (A), then a run killed after step 1 and resumed (B).
Every rank appends, after every optimizer step, the sha256 of its trainable weights and the dataset
indices it trained on to OUT/rank<r>.jsonl, so the test can check that both ranks hold the same
weights although they saw different faces (the gradients were all-reduced).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path


import ipfacediff.train.data as data_mod
import ipfacediff.train.finetune as ft


class Crash(RuntimeError):
    pass


def main(work: Path, models: Path, clip: Path, faces: Path, captions: Path, out: Path) -> int:
    seen: dict = {"unet": None, "indices": []}
    prepare, collate = ft.prepare_unet, data_mod.collate

    def keep_unet(unet, branch, cfg):  # the UNet whose branch parameters train
        seen["unet"] = unet
        return prepare(unet, branch, cfg)

    def record_batch(items):
        batch = collate(items)
        seen["indices"] += batch["index"].tolist()
        return batch

    ft.prepare_unet, data_mod.collate = keep_unet, record_batch
    params = {"profile": "dist", "seed": 0, "device": "cpu", "wandb": {"mode": "disabled"}}
    for section in ("finetune_id", "finetune_dir"):
        params[section] = {"steps": 2, "batch_size": 4, "grad_accum": 1, "lr": 1e-2, "checkpoint_every": 1, "lora_rank": 2}
    for branch in ("identity", "directional"):
        for run in ("A", "B"):
            paths = ft.Paths(out=work / run / branch, checkpoints=work / f"ckpt{run}" / branch, curve=work / run / f"{branch}.tsv",
                             faces=faces, captions=captions, models=models, clip=clip)

            def on_step(step, branch=branch, run=run, crash=(run == "B")):
                from accelerate import PartialState

                state = PartialState()
                weights = [p.detach().cpu().numpy().tobytes() for p in seen["unet"].parameters() if p.requires_grad]
                row = {"branch": branch, "run": run, "step": step, "rank": state.process_index,
                       "sha256": hashlib.sha256(b"".join(weights)).hexdigest(), "indices": seen["indices"]}
                seen["indices"] = []
                with open(out / f"rank{state.process_index}.jsonl", "a") as f:
                    f.write(json.dumps(row) + "\n")
                if crash and step == 1:
                    raise Crash("simulated crash after step 1")

            try:
                ft.finetune(branch, params, paths, on_step=on_step)
            except Crash:
                seen["indices"] = []
                meta = ft.finetune(branch, params, paths, on_step=lambda s, b=branch: on_step(s, b, "B", False))
                assert meta["resumed_from"] == 1, meta["resumed_from"]
    return 0


if __name__ == "__main__":
    a = [Path(x) for x in sys.argv[1:]]
    sys.exit(main(*a))
