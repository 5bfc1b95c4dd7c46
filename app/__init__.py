"""rnn-nlp-service web service: loads the trained artifacts and serves them over HTTP (`python -m app`)."""
