"""Widget comms that serialise every message as a kernel would, with no front end
attached: for the dashboard benchmark and for tests that count what is sent."""

from __future__ import annotations

import contextlib
import json

import comm
from comm.base_comm import BaseComm


class RecordingComm(BaseComm):
    """A comm whose messages are JSON-encoded (the kernel's cost) and counted. Like the
    kernel's session it accepts no NaN or infinity in JSON (the kernel warns and falls
    back); here it raises, so a test sees it."""

    log: list[tuple[str, int]] = []  # (message type, bytes), shared by all instances

    def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
        payload = json.dumps({"data": data, "metadata": metadata or {}}, default=str, allow_nan=False)
        size = len(payload) + sum(len(memoryview(b).cast("B")) for b in buffers or ())
        RecordingComm.log.append((msg_type, size))


@contextlib.contextmanager
def recording_comms():
    """Widgets created inside use `RecordingComm`; yields its shared log."""
    original = comm.create_comm
    RecordingComm.log = []
    comm.create_comm = lambda *a, **k: RecordingComm(*a, **k)
    try:
        yield RecordingComm.log
    finally:
        comm.create_comm = original
