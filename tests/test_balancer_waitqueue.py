"""The proxy's wait queue: oldest first, the ``queued`` gauge kept with it, bounded."""

from __future__ import annotations

from fleet.balancer.exchange import Exchange
from fleet.balancer.stats import ProxyStats
from fleet.balancer.waitqueue import QUEUE_LIMIT, WaitQueue


class Waiter:
    """A connection whose requests a worker takes while ``room`` lasts (a contracts.Waiter)."""

    def __init__(self, taken: list[Exchange], room: list[int]) -> None:
        self.taken = taken
        self.room = room

    def try_dispatch_queued(self, exchange: Exchange) -> bool:
        if not self.room[0]:
            return False
        self.room[0] -= 1
        self.taken.append(exchange)
        return True


def test_wake_hands_requests_out_oldest_first_and_keeps_the_rest_in_order() -> None:
    stats = ProxyStats()
    queue = WaitQueue(stats)
    taken: list[Exchange] = []
    room = [0]
    waiter = Waiter(taken, room)
    exchanges = [Exchange(float(i)) for i in range(4)]
    for exchange in exchanges:
        queue.add(waiter, exchange)
    assert (queue.size, len(queue), stats.queued) == (4, 4, 4)
    queue.wake()  # no worker has room: nothing moves, nothing reorders
    assert taken == [] and queue.size == 4
    room[0] = 2
    queue.wake()
    assert taken == exchanges[:2] and (queue.size, stats.queued) == (2, 2)
    room[0] = 5
    queue.wake()
    assert taken == exchanges and (queue.size, stats.queued) == (0, 0)


def test_remove_forgets_one_request_by_identity_and_a_second_remove_is_harmless() -> None:
    stats = ProxyStats()
    queue = WaitQueue(stats)
    waiter = Waiter([], [0])
    first, second = Exchange(0.0), Exchange(0.0)
    queue.add(waiter, first)
    queue.add(waiter, second)
    queue.remove(waiter, first)
    queue.remove(waiter, first)  # a client that goes after its request left the queue
    assert (queue.size, stats.queued) == (1, 1)
    room = [1]
    taken: list[Exchange] = []
    queue.add(Waiter(taken, room), Exchange(0.0))
    queue.remove(waiter, second)
    queue.wake()
    assert len(taken) == 1 and queue.size == 0


def test_full_at_the_limit() -> None:
    queue = WaitQueue(ProxyStats())
    waiter = Waiter([], [0])
    for _ in range(QUEUE_LIMIT - 1):
        queue.add(waiter, Exchange(0.0))
    assert not queue.full()
    queue.add(waiter, Exchange(0.0))
    assert queue.full()
