"""The gateway's prompt estimate for chat requests: OpenAI's framing (3 per message, 1 per name, 3 to prime the
reply) plus each role's, content's and name's tokens, with the role counts remembered."""

import pytest

from wirespeed.host.gateway.tokens import chat_prompt_tokens, count_text_tokens, encoding_for

MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hi.", "name": "ann"},
            {"role": "assistant", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": " there."}]},
            {"role": 7, "content": "odd role"}, {"role": "x" * 40, "content": "long role"}, {"content": "no role"}]


def reference(model, messages) -> int:
    total = 3
    for m in messages:
        content = m["content"] if isinstance(m["content"], str) else "".join(p["text"] for p in m["content"])
        total += 3 + count_text_tokens(model, str(m.get("role", ""))) + count_text_tokens(model, content)
        if "name" in m:
            total += 1 + count_text_tokens(model, m["name"])
    return total


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-4", "some-local-model", None])
def test_chat_prompt_tokens_count_each_role_content_and_name_the_same_every_time(model):
    first = chat_prompt_tokens(model, MESSAGES)
    assert first == chat_prompt_tokens(model, MESSAGES) == reference(model, MESSAGES)
    if encoding_for(model) is not None:
        assert first < reference("some-local-model", MESSAGES)         # tiktoken's count, not the byte bound
