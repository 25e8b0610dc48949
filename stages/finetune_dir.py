"""finetune_dir stage: train the directional branch.

`python stages/finetune_dir.py [--params params.yaml] [--faces data/faces] [--captions data/captions/faces.jsonl]
[--models models/base] [--clip models/clip] [--prompts data/prompts/edits.yaml] [--out models/branches/directional]
[--checkpoints models/checkpoints/directional] [--curve reports/train/directional.tsv]`; multi-GPU:
`accelerate launch stages/finetune_dir.py ...`. Resumes from the latest checkpoint of the same
configuration after a crash. See src/ipfacediff/train/README.md.
"""

import sys

from ipfacediff.train.finetune import stage_main

if __name__ == "__main__":
    sys.exit(stage_main("directional"))
