"""rnn-nlp-service training package: data, tokenizers, recurrent networks, training, evaluation, artifacts.

Run `python -m model --help` for the command line. Nothing here imports the web service (`app/`).
"""

__version__ = "0.1.0"
