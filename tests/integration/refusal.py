"""The one assertion every refusal test makes, in one place."""

from __future__ import annotations

from typing import Optional

from clients import Exchange
from mtlsd_harness import Mtlsd
from upstream import Upstream


def assert_refused(daemon: Mtlsd, upstream: Upstream, ex: Exchange, reason: str, *,
                   alert: bool = True, result: Optional[str] = "rejected",
                   listener: str = "inbound") -> dict:
    """The client got no data (and, when `alert`, a TLS alert rather than a
    reset), mtlsd logged the expected reason, and the upstream saw nothing.

    Returns the access-log line.
    """
    assert ex.local, f"client never connected: {ex.error!r}"
    assert ex.data == b"", f"refused client received data: {ex.data[:80]!r}"
    assert not isinstance(ex.error, TimeoutError), "refusal was not prompt: client timed out"
    if alert:
        assert ex.alert, f"expected a TLS alert, client saw {ex.error!r}"
    line = daemon.wait_for_access(client=ex.local)
    assert line.get("listener") == listener, line
    assert line.get("reason") == reason, line
    if result is not None:
        assert line.get("result") == result, line
    # The access line is written when the session ends, after any upstream
    # connect could have happened, so checking now is not racy.
    upstream.assert_untouched()
    return line


def assert_admitted(daemon: Mtlsd, ex: Exchange, expected: bytes, identity: Optional[str] = None,
                    listener: str = "inbound") -> dict:
    assert ex.error is None, f"client failed: {ex.error!r}"
    assert ex.data == expected
    line = daemon.wait_for_access(client=ex.local)
    assert line.get("listener") == listener, line
    assert line.get("result") == "accepted", line
    if identity is not None:
        assert line.get("identity") == identity, line
    return line
