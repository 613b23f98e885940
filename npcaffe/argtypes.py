"""argparse types shared by the command line (npcaffe.cli) and the commands that add their own
arguments (npcaffe.plot): values checked where they are parsed, with a message naming the rule."""
import argparse


def _bounded(kind, low, what):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value >= low:
            raise argparse.ArgumentTypeError(f"expected {what}, got '{text}'")
        return value
    return parse


# A count is at least 1 (0 iterations would divide by zero or report a net never trained).
positive_int = _bounded(int, 1, "an integer >= 1")
non_negative_int = _bounded(int, 0, "an integer >= 0")
non_negative_float = _bounded(float, 0.0, "a number >= 0")
