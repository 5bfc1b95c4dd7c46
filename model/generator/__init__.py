"""The generator kind: its config, network, data, trainer, command line and predictor."""
