"""Composition of the effective config and the store of applied layers, without a daemon."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from pathlib import Path

from gateway.remote.layers import DEVICE, Applied, Layer, compose, refused_keys
from gateway.remote.store import LayerStore, read
from gateway.statefile import write_atomic

FILE = {"device_id": "d", "groups": ["a", "b"], "heartbeat": {"interval_s": 60},
        "logging": {"level": "info"}}


def test_layer_order_is_file_groups_in_order_then_device_whatever_the_arrival() -> None:
    layers = [
        Layer("group:b", 4, {"heartbeat": {"interval_s": 5}, "logging": {"level": "debug"}}),
        Layer("group:a", 9, {"heartbeat": {"interval_s": 7}}),
        Layer(DEVICE, 2, {"logging": {"level": "error"}}),
    ]
    results = []
    for order in itertools.permutations(layers):
        results.append(compose(FILE, {layer.scope: layer for layer in order}))
    assert all(result == results[0] for result in results)
    data, origins = results[0]
    assert data["heartbeat"] == {"interval_s": 5}  # b comes after a in `groups`
    assert data["logging"] == {"level": "error"}
    assert origins == {"device_id": "file", "groups": "file", "heartbeat": "group b v4",
                       "logging": "device v2"}


def test_device_layer_moves_the_device_between_groups() -> None:
    layers = {
        "group:a": Layer("group:a", 1, {"heartbeat": {"interval_s": 7}}),
        "group:c": Layer("group:c", 1, {"heartbeat": {"interval_s": 3}}),
        DEVICE: Layer(DEVICE, 1, {"groups": ["c"]}),
    }
    data, origins = compose(FILE, layers)
    assert data["heartbeat"] == {"interval_s": 3}
    assert origins["groups"] == "device v1"


def test_refused_keys() -> None:
    assert refused_keys(DEVICE, {"groups": [], "sensors": []}) == []
    assert refused_keys("group:a", {"groups": [], "state_dir": "/x"}) == ["groups", "state_dir"]
    assert refused_keys(DEVICE, {"device_id": "e"}) == ["device_id"]


def _offload() -> Callable[[Callable[[], None]], asyncio.Future[None]]:
    async def run(fn: Callable[[], None]) -> None:
        fn()

    return run  # type: ignore[return-value]


def test_store_round_trip_and_a_corrupt_file_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "remote" / "layers.json"
    store = LayerStore(path, _offload())  # type: ignore[arg-type]
    assert store.load() == Applied()
    applied = Applied({DEVICE: Layer(DEVICE, 3, {"logging": {"level": "debug"}})},
                      {"group:a": 5})
    asyncio.run(store.save(applied))
    assert read(path) == applied
    assert store.load().versions() == {DEVICE: 3}
    write_atomic(path, b'{"layers": {"device": {"version": "x"}}}')
    assert store.load() == Applied()
    assert not path.exists()
    assert len(list(path.parent.glob("layers.json.corrupt-*"))) == 1
