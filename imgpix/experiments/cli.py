"""Command-line pieces shared by the experiments' scripts (validation/*.py)."""

from __future__ import annotations

import argparse


class OneLineErrors(argparse.ArgumentParser):
    """An argument error is one line naming the problem (and the help flag), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def int_at_least(minimum: int):
    """An argparse type: an integer >= ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    return parse
