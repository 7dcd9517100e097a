"""Routes: what arrives on a topic goes into that topic's inbox, and a route's handle removes
that route only, never a later one on the same topic (the daemon re-routes a topic to a new
inbox when its consumer is rebuilt, and the old consumer's handle must not undo that)."""

from __future__ import annotations

import asyncio

from gateway.uplink.inbox import Inbox
from gateway.uplink.routes import Routes


def test_a_handle_removes_its_route_and_no_later_one() -> None:
    async def scenario() -> tuple[int, int, int]:
        routes = Routes(lambda: None)  # not connected: nothing to (un)subscribe
        old, new, other = Inbox(4, 64), Inbox(4, 64), Inbox(4, 64)
        remove_old = routes.add("gw/d/a", old)
        routes.add("gw/d/a", new)
        remove_other = routes.add("gw/d/b", other)
        remove_old()  # stale: "gw/d/a" goes to ``new`` now
        remove_other()
        for topic in ("gw/d/a", "gw/d/b", "gw/d/c"):
            assert routes.deliver(None, topic, b"x", 1, None) == 0  # type: ignore[arg-type]
        return len(old), len(new), len(other)

    assert asyncio.run(scenario()) == (0, 1, 0)


def test_unroute_removes_whatever_inbox_a_topic_goes_to() -> None:
    async def scenario() -> int:
        routes = Routes(lambda: None)
        inbox = Inbox(4, 64)
        routes.add("gw/d/a", inbox)
        routes.remove("gw/d/a")
        routes.remove("gw/d/never")
        routes.deliver(None, "gw/d/a", b"x", 1, None)  # type: ignore[arg-type]
        return len(inbox)

    assert asyncio.run(scenario()) == 0
