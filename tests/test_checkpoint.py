"""Naming the cause of a failed checkpoint write (issue 9, A6) when DCP wraps it.

The real full disk and read-only folder are in tests/test_faults.py; these cover the wrappings seen there and in
DCP's code: an OSError inside a CheckpointException (a BaseException), one only named in a message, and a
RuntimeError without an errno on a healthy disk, which is reported as it is rather than guessed.
"""

import errno
import os
import traceback

from vjepa.train.checkpoint import CheckpointException, describe_write_error


def wrapped(err: BaseException) -> CheckpointException:
    return CheckpointException("save failed", {0: (err, traceback.StackSummary())})


def test_errno_inside_a_checkpoint_exception(tmp_path):
    inner = OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path / "x"))
    assert describe_write_error(wrapped(inner), tmp_path) == "Read-only file system (EROFS)"


def test_errno_along_the_cause_chain(tmp_path):
    try:
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as err:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from err
    except RuntimeError as err:
        outer = err
    assert describe_write_error(wrapped(outer), tmp_path) == "No space left on device (ENOSPC)"


def test_cause_named_only_in_a_message(tmp_path):
    err = RuntimeError("PytorchStreamWriter failed writing file data/0: Disk quota exceeded")
    assert describe_write_error(err, tmp_path) == "Disk quota exceeded (EDQUOT)"


def test_unexplained_error_on_a_healthy_folder_is_reported_as_is(tmp_path):
    err = wrapped(RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"))
    got = describe_write_error(err, tmp_path)
    assert got == "RuntimeError: [enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"
    assert not list(tmp_path.iterdir())  # the probe write cleaned up after itself
