"""``python -m train`` with a fault on one rank only: from its ``NAN_BATCH``-th training batch
on, rank ``NAN_RANK``'s loss is NaN (the tests of a failure on one rank of several)."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch.nn.functional as F  # noqa: E402

import train.engine  # noqa: E402
from train.cli import main  # noqa: E402

rank, bad_rank = int(os.environ.get("RANK", "0")), int(os.environ["NAN_RANK"])
calls = {"n": 0}
bce = F.binary_cross_entropy_with_logits


def faulty(logits, targets, *args, **kwargs):
    loss = bce(logits, targets, *args, **kwargs)
    if logits.requires_grad:  # a training batch
        calls["n"] += 1
        if rank == bad_rank and calls["n"] >= int(os.environ["NAN_BATCH"]):
            return loss * float("nan")
    return loss


train.engine.F = type("F", (), {"binary_cross_entropy_with_logits": staticmethod(faulty)})
main(sys.argv[1:])
