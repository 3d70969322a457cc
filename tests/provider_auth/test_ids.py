"""UUIDv7 delivery and record ids: layout, order by time, uniqueness, and no pool shared across fork."""

import multiprocessing
import time
import uuid

from provider_auth.ids import canonical_uuid, uuid7


def test_layout_is_rfc_9562_version_7() -> None:
    before = time.time_ns() // 1_000_000
    value = uuid7()
    after = time.time_ns() // 1_000_000
    parsed = uuid.UUID(value)
    assert str(parsed) == value == canonical_uuid(value)
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert before <= parsed.int >> 80 <= after


def test_ids_are_unique_and_sort_by_millisecond() -> None:
    ids = [uuid7() for _ in range(20_000)]  # several refills of the entropy pool
    assert len(set(ids)) == len(ids)
    millis = [uuid.UUID(v).int >> 80 for v in ids]
    assert millis == sorted(millis)
    # The random bits vary: no nibble position of the random part is constant across ids.
    random_parts = [v.replace("-", "")[13:] for v in ids[:2_000]]
    assert all(len({part[i] for part in random_parts}) > 1 for i in range(len(random_parts[0])))


def _child_ids(queue: "multiprocessing.Queue[list[str]]") -> None:
    queue.put([uuid7() for _ in range(5)])


def test_a_forked_child_does_not_reuse_the_parents_pool() -> None:
    uuid7()  # the parent's pool now holds unused bytes a careless child would hand out again
    context = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[list[str]] = context.Queue()
    child = context.Process(target=_child_ids, args=(queue,))
    child.start()
    from_child = queue.get(timeout=30)
    child.join(30)
    from_parent = [uuid7() for _ in range(5)]
    tail = lambda ids: {v.replace("-", "")[13:] for v in ids}  # noqa: E731 (the random part)
    assert not tail(from_child) & tail(from_parent)


def test_ids_from_several_threads_are_unique() -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        batches = list(pool.map(lambda _: [uuid7() for _ in range(5_000)], range(8)))
    ids = [value for batch in batches for value in batch]
    assert len(set(ids)) == len(ids) == 40_000
