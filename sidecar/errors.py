"""The exception tree; the CLI maps each branch to an exit code.

SidecarError                 exit 1
├── ConfigError              exit 2  (a wrong config: names the field, the value, what is allowed)
├── UsageError               exit 2  (bad command-line arguments that argparse cannot see)
├── StoreError               exit 1  (the history store cannot be opened or used)
│   ├── SchemaVersionError   exit 1  (the store was written by a newer sidecar)
│   └── StoreDataError       exit 1  (the store refused the data itself: retrying cannot help)
└── InputError               exit 1  (a log file cannot be read)
"""


class SidecarError(Exception):
    """Base of every error the sidecar raises on purpose."""

    exit_code = 1


class ConfigError(SidecarError):
    """The configuration is invalid; the message names the field, the bad value and what is allowed."""

    exit_code = 2


class UsageError(SidecarError):
    """The command line is inconsistent in a way argparse cannot express."""

    exit_code = 2


class StoreError(SidecarError):
    """The history store cannot be opened or used."""


class SchemaVersionError(StoreError):
    """The store's schema is newer than this sidecar understands."""


class StoreDataError(StoreError):
    """The store refused what was written (a number out of range, a broken constraint): the
    same write would fail again, so it is not retried as if the store were down."""


class InputError(SidecarError):
    """An input (log file) cannot be read."""
