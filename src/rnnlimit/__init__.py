"""rnnlimit."""
