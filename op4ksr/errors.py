"""UserError: the base of every error that the person running op4ksr must fix.

The CLI prints a UserError as one line (the message says what is wrong and what to do) and
exits with its `exit_status` (2 unless the class says otherwise); any other exception is a bug
or an outage and keeps its traceback. Library code raises these, never SystemExit.
"""


class UserError(ValueError):
    """Bad input, config or environment that the user must fix; the message names it and the fix."""

    exit_status = 2


class InputsAreReadOnly(UserError):
    """A command would write where its inputs are (the same file, key, folder or prefix): refused
    before anything is written. Exit status 1, as for an input refused by name (docs/OPERATIONS.md)."""

    exit_status = 1
