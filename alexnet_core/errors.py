"""The one base of every error this package raises for a user to read.

An `AlexNetError`'s text is the user message: it says what happened and how to fix it, with no
traceback needed. The pages catch `AlexNetError` in one place (alexnet_ui) and the command line
turns it into exit code 2. Subclasses keep `ValueError` beside it where callers catch that.
"""


class AlexNetError(Exception):
    """A refusal or a failure the user can act on; `str(error)` is the message to show."""

    @property
    def user_message(self) -> str:
        return str(self)
