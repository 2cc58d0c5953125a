"""How the harness speaks: progress on stdout, errors and notes on stderr, each line flushed at
once (the harness's lines and those of the programs around it interleave in one console)."""
import sys


def say(message):
    print(message, flush=True)


def complain(message):
    print(message, file=sys.stderr, flush=True)
