"""Token reservations under concurrency: a request reserves its estimate (prompt + ``max_tokens``) on admit, as its
cost in the device's bucket, and settles against the response's ``usage``. Peers that charge only afterwards let
concurrent requests overshoot a limit (LiteLLM #18730: 663 tokens through a 100 TPM limit); this cannot."""

from __future__ import annotations

import asyncio
import time

import openai
import pytest

from wirespeed.host.gateway.tokens import estimate
from tests.support.gateway_rig import GatewayRig

TPM = 10_000
TENANTS = f"""
[[tenants]]
name = "team"
key = "sk-team-1"
tokens_per_minute = {TPM}
"""
MAX_TOKENS = 400
COMPLETION = 50                 # what the mocks generate: far less than max_tokens, so refunds are large
MESSAGES = [{"role": "user", "content": "Write a short poem about token buckets."}]


async def _wave(base_url: str, n: int, deadline_s: float) -> list:
    """``n`` concurrent streaming requests; each result is its usage total, or the exception it raised."""
    client = openai.AsyncOpenAI(base_url=base_url + "/v1", api_key="sk-team-1", max_retries=0, timeout=20)

    async def one(i: int):
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", max_tokens=MAX_TOKENS, stream=True, messages=MESSAGES,
            extra_headers={"x-session-id": f"s{i}"})
        usage = None
        async for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage.total_tokens
        return usage
    try:
        return await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True),
                                      deadline_s)
    finally:
        await client.close()


@pytest.mark.parametrize("device", ["software", "model"])
def test_fifty_concurrent_streams_never_overshoot_and_refunds_let_later_requests_in(device):
    reservation = estimate("/v1/chat/completions", {"model": "gpt-4o-mini", "max_tokens": MAX_TOKENS,
                                                    "messages": MESSAGES}).total
    with GatewayRig(TENANTS, device=device, mock_kw={"completion_tokens": COMPLETION, "chunk_delay_s": 0.01}) as rig:
        t0 = time.monotonic()
        first = asyncio.run(_wave(rig.base_url, 50, 30))
        admitted = [u for u in first if isinstance(u, int)]
        limited = [e for e in first if isinstance(e, openai.RateLimitError)]
        assert len(admitted) + len(limited) == 50, [e for e in first if not isinstance(e, (int, openai.RateLimitError))]
        elapsed = time.monotonic() - t0
        # All 50 were in flight together (the mocks stream for 0.5 s): admission was decided by reservations alone.
        budget = TPM + TPM * elapsed / 60              # the burst plus what refilled meanwhile
        assert len(admitted) <= budget // reservation + 1
        assert len(admitted) >= TPM // reservation     # and the budget was used, not refused wholesale
        assert sum(admitted) <= budget
        assert all(u > COMPLETION for u in admitted)   # each usage is the prompt plus the 50 generated

        # The settlements refunded most of each reservation, so a second wave gets in; without refunds the bucket
        # would hold only what refilled (about 170 tokens a second), not one reservation.
        rig.call(rig.gateway.flush_settlements())      # (they apply within 50 ms anyway)
        second = asyncio.run(_wave(rig.base_url, 10, 30))
        elapsed = time.monotonic() - t0
        admitted2 = [u for u in second if isinstance(u, int)]
        assert len(admitted2) == 10
        assert sum(admitted) + sum(admitted2) <= TPM + TPM * elapsed / 60
        rig.call(rig.gateway.flush_settlements())
        if device == "software":                        # the bucket holds the burst minus what was used
            info = rig.gateway.primary.dev.tenants.get("sk-team-1")
            used = sum(admitted) + sum(admitted2)
            assert used - TPM * elapsed / 60 - 1 <= TPM - info.cost_tokens <= used
