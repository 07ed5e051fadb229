"""The one exception type that reaches users as a sentence (CLI exit code 2), never a traceback."""


class SetseqError(Exception):
    """Bad input or a run that cannot go on; the message says what was wrong and what to do."""
