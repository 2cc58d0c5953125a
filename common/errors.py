"""The one exception type for bad user input (a missing file, a malformed annotation, a wrong flag).

The entry points catch it and print its message as a single line with a non-zero exit status,
instead of a traceback; everything else (bugs) keeps its traceback.
"""


class InputError(ValueError):
    """Bad input from the user: the message names the file or flag and what was expected."""
