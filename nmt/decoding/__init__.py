"""Decoding: greedy search (beam search and sampling come with the translator issue)."""
