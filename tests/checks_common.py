"""Helpers the notebook checks of every chapter share."""

from companion.results import read_metrics


def is_fraction(value) -> bool:
    return isinstance(value, float) and 0.0 <= value <= 1.0




def metrics_files(folder):
    return read_metrics(folder)["files"]


