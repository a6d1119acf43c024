"""The one error type a user sees.

Anything raised as :class:`PbmlxError` is a problem with the user's input or environment
(a bad file, a missing model, an unwritable folder). The CLI prints it as one line,
``pbmlx: error: <message>``, and exits with code 2; any other exception is a bug and keeps
its traceback.
"""


class PbmlxError(Exception):
    """A user-facing error: its message is one complete sentence naming the file or value at fault."""
