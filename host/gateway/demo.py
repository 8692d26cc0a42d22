"""``wirespeed gateway --demo``: the gateway on ``"software"`` in front of two mock backends on loopback, with a sample
configuration, so a newcomer sees it working in one command.

:func:`demo_config` (two tenants, a chat pool of both mocks, an embeddings pool) ─▶ :class:`~.server.Gateway`
"""

from __future__ import annotations

from .config import parse_config

__all__ = ["demo_config", "DEMO_KEYS", "how_to_call"]

#: The demo's tenants: a roomy one, and one of 3 requests and 1 000 tokens a minute that hits its limits quickly.
DEMO_KEYS = {"acme": "sk-acme-1", "tiny": "sk-tiny-1"}


def demo_config(backends: list[str], *, device: str = "software", listen: str = "127.0.0.1:8080",
                metrics: str | None = "127.0.0.1:9464") -> object:
    """The sample configuration with ``backends`` (two mock URLs) as its pools."""
    quoted = ", ".join(f'"{b}"' for b in backends)
    metrics_line = f'metrics = "{metrics}"' if metrics else ""
    text = f"""
device = "{device}"
listen = "{listen}"
{metrics_line}
hash_secret = "wirespeed demo"

[[tenants]]
name = "acme"
key = "{DEMO_KEYS['acme']}"
requests_per_minute = 6000
tokens_per_minute = 1000000

[[tenants]]
name = "tiny"
key = "{DEMO_KEYS['tiny']}"
requests_per_minute = 3
tokens_per_minute = 1000

[[pools]]
name = "chat"
backends = [{quoted}]

[[pools]]
name = "embed"
backends = ["{backends[-1]}"]

[[routes]]
prefix = "/v1/chat/completions"
pool = "chat"
affinity = "header:x-session-id"

[[routes]]
prefix = "/v1/completions"
pool = "chat"

[[routes]]
prefix = "/v1/messages"
pool = "chat"

[[routes]]
prefix = "/v1/embeddings"
pool = "embed"

[[routes]]
prefix = "/v1/models"
pool = "chat"
"""
    return parse_config(text, "<demo>")


def how_to_call(address, metrics_address=None) -> str:
    """What the demo prints: curl and openai-SDK calls against the running gateway."""
    host, port = address
    base = f"http://{host}:{port}"
    lines = [
        f"wirespeed gateway (demo) on {base}, device 'software', two mock backends",
        "",
        "curl:",
        f"  curl -s {base}/v1/chat/completions -H 'Authorization: Bearer {DEMO_KEYS['acme']}' \\",
        "    -H 'Content-Type: application/json' -H 'x-session-id: s1' \\",
        "    -d '{\"model\": \"gpt-4o-mini\", \"max_tokens\": 8, "
        "\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}'",
        "",
        "openai SDK (Python):",
        "  from openai import OpenAI",
        f"  client = OpenAI(base_url=\"{base}/v1\", api_key=\"{DEMO_KEYS['acme']}\")",
        "  for chunk in client.chat.completions.create(model=\"gpt-4o-mini\", max_tokens=8, stream=True,",
        "                                             messages=[{\"role\": \"user\", \"content\": \"hi\"}]):",
        "      print(chunk.choices[0].delta.content if chunk.choices else chunk.usage)",
        "",
        f"The tenant 'tiny' (key {DEMO_KEYS['tiny']}) has 3 requests and 1 000 tokens a minute: its fourth call in a "
        "minute, or one with max_tokens near 1 000, gets 429 with Retry-After.",
    ]
    if metrics_address:
        lines.append(f"Metrics: curl -s http://{metrics_address[0]}:{metrics_address[1]}/metrics")
    lines.append("Ctrl-C stops it.")
    return "\n".join(lines)
