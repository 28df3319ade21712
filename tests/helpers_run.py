"""What the run, checkpoint and audit tests share: the tiny 4-update LoGo-GRPO command and a
checkpoint manifest rewrite after tampering."""

import json
from pathlib import Path

# A 4-update run on the tiny model (checkpoints after every update).
TINY = ("--model tiny --stages 2 3 --updates-per-stage 2 --group-size 2 --conversations-per-update 1 --inner-n 2 "
        "--inner-fraction 1.0 --max-new-tokens 8 --max-prompt-tokens 1024 --ppo-epochs 1 --num-minibatches 2 "
        "--micro-batch-size 8 --answerer scripted --checkpoint-every 1 --learning-rate 1e-3 --no-progress "
        "--no-tensorboard").split()


def manifest_refresh(ckpt: Path) -> None:
    """Rewrite a checkpoint's digests after tampering, so that only the deeper checks can catch it."""
    from agents.backbone import file_sha256
    from algos.checkpoint import MANIFEST

    manifest = json.loads((ckpt / MANIFEST).read_text())
    manifest["files"] = {rel: file_sha256(ckpt / rel) for rel in manifest["files"]}
    (ckpt / MANIFEST).write_text(json.dumps(manifest))
