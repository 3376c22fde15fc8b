"""Data sets and loaders. Everything here works offline on shipped or generated data."""

from distlstm.data.text import SHAKESPEARE_TRAGEDIES, CharVocab, load_text, random_windows, split_ids

__all__ = ["SHAKESPEARE_TRAGEDIES", "CharVocab", "load_text", "random_windows", "split_ids"]
