"""UserError: the base of every error that the person running op4ksr must fix.

The CLI prints a UserError as one line (the message says what is wrong and what to do) and
exits 2; any other exception is a bug or an outage and keeps its traceback. Library code raises
these, never SystemExit.
"""


class UserError(ValueError):
    """Bad input, config or environment that the user must fix; the message names it and the fix."""
