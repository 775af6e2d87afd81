"""The project's one user-facing error type.

Every error a user can cause (bad model, bad binary, bad CLI argument, bad config)
is raised as an `EsactError` subclass with a one-line message naming the node,
field or argument at fault. CLIs print `prog: error: <message>` and exit 1
(runtime/cli/user_errors.py).
"""


class EsactError(Exception):
    """Base of all user-facing errors; the message is one line."""


class BinaryFormatError(EsactError):
    """A .esb file is malformed, truncated, corrupt or hostile."""


class ProgramError(EsactError):
    """A decoded program is invalid (bad field value, out-of-range address, deadlock)."""


class ConfigError(EsactError):
    """A hardware config file is malformed or does not match a binary."""


class CompileError(EsactError):
    """The compiler cannot handle a model (unsupported op, unknown dimension, ...)."""


class InstallError(EsactError):
    """esact-cc is installed incompletely (its compiled module is not built)."""


class UsageError(EsactError):
    """A bad command-line argument (malformed option, unreadable input file)."""


class CommandLineError(UsageError):
    """A bad option value or combination found after argument parsing; the tools exit 2 for
    it, as argparse does for its own usage errors (a bad input file is exit 1)."""
