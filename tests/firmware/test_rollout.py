"""The rollout formula over a fleet of 10,000 ids: shares, monotony, fresh cohorts."""

from __future__ import annotations

from gateway.firmware.rollout import bucket, default_salt, eligible

DEVICES = [f"gw-{n:05d}" for n in range(10_000)]


def cohort(percent: float, salt: str) -> set[str]:
    return {d for d in DEVICES if eligible(percent, salt, d)}


def test_every_percentage_admits_its_share_within_one_point() -> None:
    salt = default_salt("stable", "1.4.0")
    for percent in (0, 0.5, 1, 5, 10, 25, 33.3, 50, 75, 99, 100):
        share = len(cohort(percent, salt)) / len(DEVICES) * 100
        assert abs(share - percent) <= 1.0, (percent, share)
    assert cohort(100, salt) == set(DEVICES)
    assert cohort(0, salt) == set()


def test_raising_the_percentage_never_removes_a_device() -> None:
    salt = default_salt("stable", "1.4.0")
    previous: set[str] = set()
    for percent in (1, 2, 10, 10.5, 50, 100):
        current = cohort(percent, salt)
        assert previous <= current
        previous = current


def test_two_releases_draw_different_cohorts() -> None:
    first = cohort(10, default_salt("stable", "1.4.0"))
    second = cohort(10, default_salt("stable", "1.5.0"))
    overlap = len(first & second) / len(first)
    assert overlap < 0.2  # independent draws share about 10 %


def test_the_spec_formula() -> None:
    import hashlib

    expected = int.from_bytes(hashlib.sha256(b"beta:2.0:dev-7").digest()[:8], "big") % 10000
    assert bucket("beta:2.0", "dev-7") == expected
