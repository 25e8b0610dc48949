"""finetune_id stage: train the identity branch.

`python stages/finetune_id.py [--params params.yaml] [--faces data/faces] [--captions data/captions/faces.jsonl]
[--models models/base] [--out models/branches/identity]
[--checkpoints models/checkpoints/identity] [--curve reports/train/identity.tsv]`; multi-GPU:
`accelerate launch stages/finetune_id.py ...`. Resumes from the latest checkpoint of the same
configuration after a crash. See src/ipfacediff/train/README.md.
"""

import sys

from ipfacediff.train.finetune import stage_main

if __name__ == "__main__":
    sys.exit(stage_main("identity"))
