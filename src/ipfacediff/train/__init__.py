"""Training the identity and directional branches: captions, losses, the accelerate trainer.

Entry points: `finetune.finetune(branch, params, paths)` (the finetune_id / finetune_dir stages),
`captioning.run_caption_stage` (the caption stage). See README.md in this folder.
"""
