"""The sentiment kind: its config, network, data, trainer, command line and predictor."""
