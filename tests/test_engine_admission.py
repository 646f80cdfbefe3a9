"""The engine's admission gate: background queries wait while interactive ones run, never forever."""

from __future__ import annotations

import asyncio

from tracehouse.engine.admission import Admission, is_background


def test_background_is_a_priority_below_interactive() -> None:
    assert [is_background({"priority": p}) for p in ("0", "1", "3", "5", "", "x")] == [
        False,
        False,
        True,
        True,
        False,
        False,
    ]
    assert not is_background({})


async def test_a_background_query_starts_when_the_interactive_ones_are_done() -> None:
    gate = Admission(max_wait_s=5)
    order: list[str] = []
    release = asyncio.Event()

    async def interactive(name: str) -> None:
        async with gate.admit(background=False):
            order.append(f"{name} start")
            await release.wait()
            order.append(f"{name} end")

    async def background() -> float:
        async with gate.admit(background=True) as waited:
            order.append("background start")
            return waited

    first, second = asyncio.create_task(interactive("a")), asyncio.create_task(interactive("b"))
    await asyncio.sleep(0.01)
    waiting = asyncio.create_task(background())
    await asyncio.sleep(0.2)
    assert "background start" not in order and gate.interactive == 2
    release.set()
    waited = await waiting
    await asyncio.gather(first, second)
    assert order.index("background start") > max(order.index("a end"), order.index("b end"))
    assert 0.15 < waited < 5 and gate.waited == 1
    # With no interactive query about, a background one is admitted at once.
    async with gate.admit(background=True) as waited:
        assert waited == 0.0


async def test_background_work_is_delayed_never_starved_and_the_gate_can_be_off() -> None:
    gate = Admission(max_wait_s=0.3)
    async with gate.admit(background=False):
        async with gate.admit(background=True) as waited:  # an interactive query that never ends
            assert 0.25 < waited < 2
        off = Admission(max_wait_s=0)
        async with off.admit(background=False), off.admit(background=True) as waited:
            assert waited == 0.0 and off.waited == 0
