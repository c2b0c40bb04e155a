"""The training commands: ``training.cli.train`` (train, finetune, cv) and
``training.cli.evaluate`` (evaluate and one command per other protocol)."""
