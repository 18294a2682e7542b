"""Stage 5, training: the config, the trainer and its callbacks, the auto recipe, one metrics module."""
