"""MessageQueue and SpillStore semantics, on real SQLite files.

Each test drives the queue through its public calls (put, take, ack, rewind, run,
open/close); the disk tier is a real ``queue.db`` in the test's directory.
"""

from __future__ import annotations

import asyncio
import queue as stdqueue
import sqlite3
import subprocess
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from helpers import Broker, Subscriber

from gateway.config.models import MqttConfig, QueueConfig
from gateway.uplink.queue import Message, MessageQueue
from gateway.uplink.spill import Row, SpillStore, row_size
from gateway.uplink.supervisor import Identity, Uplink

TOPIC = "gw/dev/telemetry/"


def msg(sensor: str, n: int, size: int = 16, qos: int = 1) -> Message:
    payload = f"{sensor}:{n}:".encode().ljust(size, b".")
    return Message(TOPIC + sensor, payload, qos, sensor)


def label(message: Message) -> str:
    sensor, n, _ = message.payload.split(b":", 2)
    return f"{sensor.decode()}:{int(n)}"


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 30))


async def until(predicate: Callable[[], bool], what: str, within_s: float = 5.0) -> None:
    try:
        async with asyncio.timeout(within_s):
            while not predicate():  # noqa: ASYNC110 (polling state we do not own)
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def take_all(queue: MessageQueue, count: int) -> list[Message]:
    taken = []
    for _ in range(count):
        async with asyncio.timeout(5):
            taken.append(await queue.take())
    return taken


async def nothing_left(queue: MessageQueue) -> bool:
    try:
        async with asyncio.timeout(0.2):
            await queue.take()
    except TimeoutError:
        return True
    return False


def disk_config(**overrides: Any) -> QueueConfig:
    settings: dict[str, Any] = {
        "memory_max_messages": 1000,
        "disk_max_bytes": 1_000_000,
        "spill_after_s": 0.05,
    }
    settings.update(overrides)
    return QueueConfig(**settings)


class Running:
    """An opened queue with its ``run`` task; closed (and the task checked) on exit."""

    def __init__(self, config: QueueConfig, state_dir: Path) -> None:
        self.queue = MessageQueue(config, state_dir)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> MessageQueue:
        await self.queue.open()
        self._task = asyncio.create_task(self.queue.run())
        await asyncio.sleep(0)  # let it start waiting before anything is put
        return self.queue

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        crashed = self._task.done() and not self._task.cancelled()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.queue.close()
        if crashed:
            self._task.result()  # the spiller died: raise why


# -- memory tier ---------------------------------------------------------------------


def test_messages_leave_in_the_order_they_came() -> None:
    async def main() -> None:
        queue = MessageQueue(QueueConfig())
        put = [msg(sensor, n) for n in range(100) for sensor in ("a", "b", "c")]
        for message in put:
            queue.put(message)
        taken = await take_all(queue, len(put))
        assert [label(m) for m in taken] == [label(m) for m in put]
        assert await nothing_left(queue)

    run(main())


def test_only_ack_removes_a_message() -> None:
    async def main() -> None:
        queue = MessageQueue(QueueConfig())
        for n in range(3):
            queue.put(msg("a", n))
        first, second = await take_all(queue, 2)
        assert queue.depth == 3
        assert queue.stats().in_flight == 2
        queue.ack(second)
        assert queue.depth == 2
        queue.ack(second)  # a second PUBACK for the same message changes nothing
        assert queue.depth == 2
        queue.ack(first)
        assert queue.stats().depth == 1
        assert queue.stats().in_flight == 0

    run(main())


def test_rewind_puts_unacked_messages_back_in_order() -> None:
    async def main() -> None:
        queue = MessageQueue(QueueConfig())
        for n in range(8):
            queue.put(msg("a", n))
        taken = await take_all(queue, 5)
        queue.ack(taken[1])
        queue.ack(taken[3])
        queue.rewind()
        again = await take_all(queue, 6)
        assert [label(m) for m in again] == [f"a:{n}" for n in (0, 2, 4, 5, 6, 7)]
        assert await nothing_left(queue)

    run(main())


@pytest.mark.parametrize("policy", ["oldest", "newest"])
def test_drops_are_counted_exactly_per_sensor(policy: str) -> None:
    async def main() -> None:
        queue = MessageQueue(QueueConfig(memory_max_messages=10, drop_policy=policy))
        # 25 messages: a, a, b, a, a, b, ... so both sensors lose some.
        put = [msg("b" if n % 3 == 2 else "a", n) for n in range(25)]
        for message in put:
            queue.put(message)
        kept = put[-10:] if policy == "oldest" else put[:10]
        dropped = put[:-10] if policy == "oldest" else put[10:]
        stats = queue.stats()
        assert stats.depth == 10
        assert stats.dropped == 15
        assert stats.dropped_by_sensor == {
            s: sum(1 for m in dropped if m.sensor == s) for s in ("a", "b")
        }
        taken = await take_all(queue, 10)
        assert [label(m) for m in taken] == [label(m) for m in kept]

    run(main())


def test_byte_bound_holds_and_in_flight_messages_are_never_dropped() -> None:
    async def main() -> None:
        size = 300
        queue = MessageQueue(QueueConfig(memory_max_bytes=2048))
        first = msg("a", 0, size)
        queue.put(first)
        [taken] = await take_all(queue, 1)  # in flight: not the memory tier's to drop
        for n in range(1, 50):
            queue.put(msg("a", n, size))
        stats = queue.stats()
        one = first.size
        assert stats.bytes - one <= 2048 + one
        assert stats.depth == 1 + (stats.bytes - one) // one
        assert stats.dropped == 50 - stats.depth
        queue.ack(taken)
        rest = await take_all(queue, stats.depth - 1)
        assert [label(m) for m in rest] == [f"a:{n}" for n in range(50 - len(rest), 50)]

    run(main())


# -- disk tier -----------------------------------------------------------------------


def test_spilled_messages_survive_close_and_reopen(tmp_path: Path) -> None:
    put = [msg(sensor, n, qos=n % 2) for n in range(50) for sensor in ("a", "b")]

    async def first_life() -> None:
        async with Running(disk_config(), tmp_path) as queue:
            for message in put:
                queue.put(message)
            await until(lambda: queue.spilled >= 60, "the stale messages to spill")

    async def second_life() -> None:
        queue = MessageQueue(disk_config(), tmp_path)
        await queue.open()
        try:
            assert queue.depth == len(put)
            taken = await take_all(queue, len(put))
            assert [(m.topic, m.payload, m.qos, m.sensor) for m in taken] == [
                (m.topic, m.payload, m.qos, m.sensor) for m in put
            ]
            for message in taken[:30]:
                queue.ack(message)
        finally:
            await queue.close()

    async def third_life() -> None:
        queue = MessageQueue(disk_config(), tmp_path)
        await queue.open()
        try:
            assert queue.depth == len(put) - 30
            taken = await take_all(queue, len(put) - 30)
            assert [label(m) for m in taken] == [label(m) for m in put[30:]]
        finally:
            await queue.close()

    run(first_life())  # close() writes what had not spilled yet
    run(second_life())  # only acked rows are deleted
    run(third_life())


@pytest.mark.parametrize("garbage", [b"not a database at all" * 100, b""])
def test_an_unusable_queue_file_is_set_aside_and_a_fresh_one_used(
    tmp_path: Path, garbage: bytes
) -> None:
    (tmp_path / "queue.db").write_bytes(garbage)
    (tmp_path / "queue.db-wal").write_bytes(b"\x00" * 64)

    async def life() -> None:
        queue = MessageQueue(disk_config(), tmp_path)
        await queue.open()
        try:
            queue.put(msg("a", 1))
            [message] = await take_all(queue, 1)
            assert label(message) == "a:1"
        finally:
            await queue.close()

    if garbage:
        run(life())
        [aside] = tmp_path.glob("queue.db.corrupt-*[0-9]")
        assert aside.read_bytes() == garbage
    else:
        run(life())  # an empty file is an empty database to SQLite: nothing set aside
        assert not list(tmp_path.glob("queue.db.corrupt-*"))
    with sqlite3.connect(tmp_path / "queue.db") as db:
        assert db.execute("SELECT count(*) FROM messages").fetchone() == (1,)


def test_disk_rows_go_first_after_a_restart(tmp_path: Path) -> None:
    async def first_life() -> None:
        queue = MessageQueue(disk_config(), tmp_path)
        await queue.open()
        for n in range(20):
            queue.put(msg("a", n))
        await queue.close()

    async def second_life() -> None:
        async with Running(disk_config(), tmp_path) as queue:
            for n in range(20, 30):
                queue.put(msg("a", n))
            taken = await take_all(queue, 30)
            assert [label(m) for m in taken] == [f"a:{n}" for n in range(30)]
            for message in taken:
                queue.ack(message)
            assert queue.depth == 0

    run(first_life())
    run(second_life())


def test_eviction_when_disk_is_full_counts_per_sensor_and_keeps_the_newest(
    tmp_path: Path,
) -> None:
    rows = 20
    one = row_size(TOPIC + "a", msg("a", 0).payload)
    put = [msg("b" if n % 4 == 0 else "a", n) for n in range(rows + 7)]

    async def main() -> None:
        config = disk_config(disk_max_bytes=rows * one)
        async with Running(config, tmp_path) as queue:
            for message in put:
                queue.put(message)
                await asyncio.sleep(0.01)  # spread over several spills
            await until(lambda: queue.spilled == len(put), "everything to spill")
            stats = queue.stats()
            assert stats.depth == rows
            dropped = put[:-rows]
            assert stats.dropped == len(dropped)
            assert stats.dropped_by_sensor == {
                s: sum(1 for m in dropped if m.sensor == s) for s in ("a", "b")
            }
            taken = await take_all(queue, rows)
            assert [label(m) for m in taken] == [label(m) for m in put[-rows:]]

    run(main())


def test_acked_rows_make_room_before_undelivered_ones_are_evicted(tmp_path: Path) -> None:
    rows = 10
    one = row_size(TOPIC + "a", msg("a", 0).payload)

    async def main() -> None:
        # Spills happen only when memory is over half full (2 of 4), one message at a time.
        config = disk_config(memory_max_messages=4, spill_after_s=60, disk_max_bytes=rows * one)
        async with Running(config, tmp_path) as queue:

            async def put(n: int) -> None:
                spilled = queue.spilled
                queue.put(msg("a", n))
                if n >= 2:
                    await until(lambda: queue.spilled > spilled, f"a:{n - 2} to spill")

            for n in range(12):
                await put(n)
            assert queue.stats().depth == 12  # 10 rows on disk: full
            for message in await take_all(queue, 5):
                queue.ack(message)  # delivered; their rows wait for a batched delete
            await put(12)
            stats = queue.stats()
            assert stats.dropped == 0, stats
            assert stats.depth == 8, stats
            taken = await take_all(queue, 8)
            assert [label(m) for m in taken] == [f"a:{n}" for n in range(5, 13)]

    run(main())


def test_a_row_evicted_in_flight_counts_as_dropped_only_if_never_acknowledged(
    tmp_path: Path,
) -> None:
    rows = 10
    one = row_size(TOPIC + "a", msg("a", 0).payload)

    async def main() -> None:
        # Spills happen only when memory is over half full (2 of 4), one message at a time.
        config = disk_config(memory_max_messages=4, spill_after_s=60, disk_max_bytes=rows * one)
        async with Running(config, tmp_path) as queue:

            async def put(n: int) -> None:
                spilled = queue.spilled
                queue.put(msg("a", n))
                if n >= 2:
                    await until(lambda: queue.spilled > spilled, f"a:{n - 2} to spill")

            for n in range(12):
                await put(n)  # a:0..9 on disk, which is full
            in_flight = await take_all(queue, 3)
            assert [label(m) for m in in_flight] == ["a:0", "a:1", "a:2"]
            await put(12)  # a:10 to disk evicts the row of a:0, in flight
            for message in in_flight:
                queue.ack(message)  # the broker had a:0 after all
            stats = queue.stats()
            assert (stats.dropped, stats.depth) == (0, 10), stats

            [unlucky] = await take_all(queue, 1)
            assert label(unlucky) == "a:3"
            for n in (13, 14, 15):
                await put(n)  # the last spill evicts the row of a:3, in flight
            queue.rewind()  # the connection is lost before a:3's ack: it is gone
            stats = queue.stats()
            assert (stats.dropped, stats.dropped_by_sensor) == (1, {"a": 1}), stats
            queue.ack(unlucky)  # a late ack of a lost message changes nothing
            assert queue.stats().dropped == 1
            taken = await take_all(queue, 12)
            assert [label(m) for m in taken] == [f"a:{n}" for n in range(4, 16)]
            assert await nothing_left(queue)

    run(main())


def test_rewound_messages_that_spill_after_newer_ones_are_not_stranded(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with Running(disk_config(), tmp_path) as queue:
            for n in range(10):
                queue.put(msg("a", n))
            await take_all(queue, 10)  # in flight from memory
            for n in range(10, 20):
                queue.put(msg("a", n))
            await until(lambda: queue.spilled == 10, "a:10..19 to spill")
            [first_on_disk] = await take_all(queue, 1)
            assert label(first_on_disk) == "a:10"
            queue.rewind()  # the connection is lost: a:0..10 go back
            await until(lambda: queue.spilled == 20, "the rewound a:0..9 to spill")
            taken = await take_all(queue, 20)
            assert [label(m) for m in taken] == [f"a:{n}" for n in range(20)]
            assert await nothing_left(queue)

    run(main())


def test_a_rewind_while_rows_are_being_written_loses_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        async with Running(disk_config(spill_after_s=0.1), tmp_path) as queue:
            for n in range(5):
                queue.put(msg("a", n))
            await take_all(queue, 3)  # a:0..2 in flight
            # Another writer holds the database, so the spill of a:3..4 waits in SQLite.
            blocker = sqlite3.connect(tmp_path / "queue.db", isolation_level=None)
            try:
                blocker.execute("BEGIN IMMEDIATE")
                await asyncio.sleep(0.5)
                queue.rewind()  # meanwhile the connection is lost
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            await until(lambda: queue.spilled >= 5, "everything to spill")
            taken = await take_all(queue, 5)
            assert [label(m) for m in taken] == [f"a:{n}" for n in range(5)]
            assert await nothing_left(queue)
            assert queue.depth == 5

    run(main())


def test_spill_store_append_load_delete_and_eviction(tmp_path: Path) -> None:
    store = SpillStore(tmp_path / "q.db", max_bytes=5 * row_size("t", b"x" * 10))
    store.open()
    try:
        rows = [Row(k, "s" if k % 2 else "z", "t", 1, b"x" * 10) for k in range(1, 9)]
        assert store.append(rows[:5], evict=False) == (5, [])
        assert store.append(rows[5:], evict=False) == (0, [])  # full, no eviction asked
        stored, evicted = store.append(rows[5:7], evict=True)
        assert (stored, evicted) == (2, [(1, "s"), (2, "z")])  # exactly as many as needed
        assert [r.key for r in store.load(0, 100)] == [3, 4, 5, 6, 7]
        assert [r.key for r in store.load(4, 2)] == [5, 6]
        store.delete([3, 5, 99])
        assert (store.count, store.last_key) == (3, 7)
        # An older key (a rewound message) does not move the high-water mark back.
        assert store.append([Row(2, "z", "t", 1, b"x" * 10)], evict=False) == (1, [])
        assert store.last_key == 7
        assert [r.key for r in store.load(0, 100)] == [2, 4, 6, 7]
    finally:
        store.close()
    reopened = SpillStore(tmp_path / "q.db", max_bytes=1 << 20)
    reopened.open()
    try:
        assert (reopened.count, reopened.last_key) == (4, 7)
        assert reopened.bytes == 4 * row_size("t", b"x" * 10)
    finally:
        reopened.close()


# -- QoS 0 through a real broker -----------------------------------------------------


def wait_subscribed(sub: Subscriber, port: int) -> None:
    """QoS 0 is not kept for anyone: make sure the subscription is live first."""
    for _ in range(50):
        subprocess.run(
            ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", TOPIC + "probe",
             "-m", "probe"],
            check=True,
        )  # fmt: skip
        try:
            sub.until(lambda m: m.topic == TOPIC + "probe", timeout=0.2)
        except (TimeoutError, stdqueue.Empty):
            continue
        else:
            return
    raise AssertionError("the subscriber never got its probe")


def test_qos0_leaves_the_queue_once_written(broker: Broker) -> None:
    sub = Subscriber(broker.port, TOPIC + "#")
    wait_subscribed(sub, broker.port)

    async def main() -> None:
        queue = MessageQueue(QueueConfig())
        config = MqttConfig(brokers=[broker.url], backoff={"initial_s": 0.05, "max_s": 0.1})
        uplink = Uplink(config, Identity("dev", "test", "boot"), queue)
        task = asyncio.create_task(uplink.run())
        try:
            await until(lambda: uplink.connected, "a connection")
            for n in range(20):
                queue.put(msg("a", n, qos=0))
            await until(lambda: queue.depth == 0, "QoS 0 messages to leave")
            assert queue.stats().in_flight == 0
        finally:
            await uplink.shutdown(1)
            await task

    try:
        run(main())
        got = [sub.until(lambda m: m.topic == TOPIC + "a").payload for _ in range(20)]
        assert got == [msg("a", n).payload for n in range(20)]
    finally:
        sub.close()
