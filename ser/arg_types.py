"""Argparse ``type=`` parsers of the command line: one per kind of option value.

Each is a check of :mod:`client.option_values` (where Locust's parser and the client
benchmark take theirs too) wrapped by :func:`client.option_values.arg_type`: a bad value
becomes argparse's one-line usage error naming the text (exit code 2).
"""

from __future__ import annotations

from client import option_values as values

positive_int = values.arg_type(values.positive_int)
non_negative_int = values.arg_type(values.non_negative_int)
port = values.arg_type(values.port)
positive_float = values.arg_type(values.positive_float)
non_negative_float = values.arg_type(values.non_negative_float)
seconds = values.arg_type(values.seconds)
csv_list = values.arg_type(values.csv_list)
csv_ints = values.arg_type(values.csv_ints)
csv_positive_ints = values.arg_type(values.csv_positive_ints)

__all__ = ["positive_int", "non_negative_int", "port", "positive_float", "non_negative_float", "seconds", "csv_list", "csv_ints", "csv_positive_ints"]
