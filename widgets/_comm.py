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
    states: list[tuple[dict, dict]] = []  # (the state sent, {trait sent as a buffer: bytes})

    def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
        payload = json.dumps({"data": data, "metadata": metadata or {}}, default=str, allow_nan=False)
        sizes = [len(memoryview(b).cast("B")) for b in buffers or ()]
        RecordingComm.log.append((msg_type, len(payload) + sum(sizes)))
        if isinstance(data, dict) and "state" in data:
            paths = [".".join(map(str, p)) for p in data.get("buffer_paths", [])]
            RecordingComm.states.append((data["state"], dict(zip(paths, sizes))))


@contextlib.contextmanager
def recording_comms():
    """Widgets created inside use `RecordingComm`; yields its shared log."""
    original = comm.create_comm
    RecordingComm.log, RecordingComm.states = [], []
    comm.create_comm = lambda *a, **k: RecordingComm(*a, **k)
    try:
        yield RecordingComm.log
    finally:
        comm.create_comm = original
