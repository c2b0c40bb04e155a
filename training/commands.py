"""The training commands, registered with the harstream CLI through the
``harstream.commands`` entry point, so the runtime package never imports training
(docs/design.md: imports flow one way). One command per job, each its own function that
reads top to bottom: ``training.cli.train`` (train, finetune, cv) and
``training.cli.evaluate`` (evaluate, evaluate-orders, evaluate-orientations,
evaluate-baseline, evaluate-field, tradeoff, export). Nothing here imports torch until a
command runs; without the ``train`` extra the commands say how to get it.
"""

from __future__ import annotations

import argparse

from training.cli import evaluate, train

__all__ = ["register"]


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    train.register(commands)
    evaluate.register(commands)
