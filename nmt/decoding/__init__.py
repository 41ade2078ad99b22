"""Decoding: greedy search, beam search (a pure step plus a driver) and sampling, on any `Seq2Seq` model."""
