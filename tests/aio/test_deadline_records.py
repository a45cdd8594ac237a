"""The deadline records on their own (``sqlgate._deadlines``): no loop, no pool.

``AsyncPool``'s timer is tested through the pool in test_aiopool_deadlines.py;
these pin the record keeping that any owner (a loop timer, a thread) drives.
"""

from __future__ import annotations

import asyncio
import gc

from sqlgate._deadlines import SLACK, Deadlines, LoopDeadlines


class Item:
    def __init__(self, name: str) -> None:
        self.name = name
        self.live = True

    def __repr__(self) -> str:
        return self.name


def make(items: list[Item]) -> Deadlines[Item]:
    return Deadlines(lambda i: i.live, lambda: sum(i.live for i in items))


def test_due_items_expire_and_settled_ones_never() -> None:
    a, b, c, d = items = [Item("a"), Item("b"), Item("c"), Item("d")]
    dl = make(items)
    dl.push(a, 10.0)
    dl.push(b, 20.0)
    dl.push(c, 5.0)  # earlier than the last record: the heap
    dl.push(d, 20.0)
    assert (len(dl.records), len(dl.early), len(dl)) == (3, 1, 4)
    assert dl.next_at() == 5.0
    b.live = False  # settled before its deadline
    expired: list[Item] = []
    assert dl.expire_due(9.999, expired.append) == 10.0
    assert expired == [c]
    assert dl.expire_due(20.0, expired.append) is None  # exactly due: expired
    assert expired == [c, a, d]
    assert len(dl) == 0


def test_expire_due_stops_at_the_first_live_item_not_due() -> None:
    a, b = items = [Item("a"), Item("b")]
    dl = make(items)
    dl.push(a, 1.0)
    dl.push(b, 2.0)
    a.live = False
    expired: list[Item] = []
    assert dl.expire_due(1.5, expired.append) == 2.0
    assert (expired, list(dl.records)) == ([], [(2.0, b)])


def test_records_of_settled_items_are_swept_past_the_cap() -> None:
    head = Item("head")
    items = [head]
    dl = make(items)
    dl.push(head, 0.0)
    for n in range(SLACK + 2):  # settled behind a live head: swept
        item = Item(f"i{n}")
        items.append(item)
        dl.push(item, 1.0 + n)
        item.live = False
    # The push that took the records past SLACK (that of i63) trimmed: i63
    # (still live while pushed) and the head were kept, the cap set from
    # their count; two more were pushed since.
    names = [i.name for _, i in dl.records]
    assert names == ["head", f"i{SLACK - 1}", f"i{SLACK}", f"i{SLACK + 1}"]
    assert dl.cap == 2 * 2 + SLACK
    assert dl.next_at() == 0.0


def test_clear_drops_everything() -> None:
    a, b = items = [Item("a"), Item("b")]
    dl = make(items)
    dl.push(a, 2.0)
    dl.push(b, 1.0)
    dl.clear()
    assert (len(dl), dl.next_at()) == (0, None)


class Owner:
    def __init__(self) -> None:
        self.expired: list[Item] = []

    def expire(self, item: Item) -> None:
        item.live = False
        self.expired.append(item)


def test_one_loop_timer_serves_every_deadline() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        now = [100.0]
        loop.time = lambda: now[0]  # type: ignore[method-assign]
        owner = Owner()
        a, b, c = items = [Item("a"), Item("b"), Item("c")]
        dl = LoopDeadlines(lambda i: i.live, lambda: len(items), owner.expire)
        dl.bind(loop, loop.time)
        dl.add(a, 110.0)
        dl.add(b, 120.0)
        assert (dl.at, dl.timer is not None) == (110.0, True)
        first = dl.timer
        dl.add(c, 105.0)  # earlier: the timer moves
        assert dl.at == 105.0
        assert first is not None
        assert first.cancelled()
        now[0] = 110.0
        for _ in range(3):
            await asyncio.sleep(0)
        # Due together: the ordered records first, then the early heap.
        assert owner.expired == [a, c]
        assert dl.at == 120.0  # re-armed for the next record
        dl.clear()
        assert dl.timer is None
        now[0] = 130.0
        await asyncio.sleep(0)
        assert owner.expired == [a, c]

    asyncio.run(main())


def test_the_timer_holds_its_owner_weakly() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        owner = Owner()
        item = Item("a")
        dl = LoopDeadlines(lambda i: i.live, lambda: 1, owner.expire)
        dl.bind(loop, loop.time)
        dl.add(item, loop.time())
        del owner
        gc.collect()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert item.live  # nobody left to expire it: nothing happened
        assert dl.timer is None

    asyncio.run(main())
