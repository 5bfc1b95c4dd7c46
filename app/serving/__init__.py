"""Serving engines: the micro-batching classifier and the continuous-batching generator."""
