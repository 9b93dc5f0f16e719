"""Errors a user can cause. The CLI prints their message alone, without a traceback."""


class UserError(Exception):
    """Base class: bad options, bad data, bad checkpoint, unwritable output."""


class OptionsError(UserError):
    """Malformed YAML, unknown or misspelled keys, wrong value types, missing keys."""


class DataError(UserError):
    """Missing/empty folders, unreadable images, images smaller than the crop."""


class CheckpointError(UserError):
    """Truncated file, checkpoint of another architecture, missing keys."""


class TrainingError(UserError):
    """The run cannot continue (e.g. a non-finite loss); saved checkpoints stay."""


def user_message(exc: BaseException) -> str:
    """The message of a UserError, also when it was re-raised by a DataLoader worker.

    DataLoader workers re-raise ``Type("Caught Type in worker ...\\nOriginal Traceback ...")``;
    the user only needs the original message on the last line.
    """
    msg = str(exc)
    if "Original Traceback" in msg:
        last = [line for line in msg.strip().splitlines() if line.strip()][-1]
        head, sep, tail = last.partition(": ")
        msg = tail if sep and head.rsplit(".", 1)[-1] == type(exc).__name__ else last
    return msg
