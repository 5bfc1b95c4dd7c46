"""The translator: a bidirectional GRU encoder and a GRU decoder with attention over the encoder's states
(many-to-many with two sequences of different lengths), subword vocabularies from `tokenizers`."""
