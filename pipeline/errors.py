"""The one exception type the entry point turns into a one-line message instead of a traceback."""


class PipelineError(Exception):
    """Bad input or state that the user can fix: the message names the file, row or config key."""
