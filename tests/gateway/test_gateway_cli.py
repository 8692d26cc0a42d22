"""The ``wirespeed gateway`` command line: ``--demo`` works in one command and tells a newcomer how to call it; a bad
configuration stops it at start with one line naming the file, the table, the field and the limit."""

from __future__ import annotations

import re
import subprocess
import sys
import threading

import openai


def _read_until(proc, marker: str, timeout_s: float) -> str:
    """stdout up to the line holding ``marker``; the process is killed if it has not printed it in time."""
    watchdog = threading.Timer(timeout_s, proc.kill)
    watchdog.start()
    out = []
    try:
        for line in proc.stdout:
            out.append(line)
            if marker in line:
                return "".join(out)
    finally:
        watchdog.cancel()
    raise AssertionError(f"{marker!r} not printed in {timeout_s} s: {''.join(out)}{proc.stderr.read()}")


def test_demo_prints_how_to_call_it_and_the_printed_calls_work():
    proc = subprocess.Popen([sys.executable, "-m", "wirespeed", "gateway", "--demo", "--listen", "127.0.0.1:0",
                             "--metrics", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        text = _read_until(proc, "Ctrl-C", 60)
        base = re.search(r'base_url="(http://[\d.:]+)/v1"', text).group(1)
        key = re.search(r'api_key="(sk-[\w-]+)"', text).group(1)
        assert f"curl -s {base}/v1/chat/completions" in text
        client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=20)
        chunks = list(client.chat.completions.create(model="gpt-4o-mini", max_tokens=8, stream=True,
                                                     messages=[{"role": "user", "content": "hi"}]))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).split() == \
            [f"tok{i}" for i in range(8)]
        tiny = re.search(r"key (sk-tiny-\d+)", text).group(1)
        tiny_client = openai.OpenAI(base_url=base + "/v1", api_key=tiny, max_retries=0, timeout=20)
        limited = 0
        for _ in range(4):                          # 3 requests a minute: the fourth is limited
            try:
                tiny_client.chat.completions.create(model="gpt-4o-mini", max_tokens=8,
                                                    messages=[{"role": "user", "content": "hi"}])
            except openai.RateLimitError as exc:
                limited += 1
                assert int(exc.response.headers["retry-after"]) >= 1
        assert limited == 1
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.returncode == 0


def test_bad_configuration_is_one_line_at_start(tmp_path):
    path = tmp_path / "gw.toml"
    path.write_text('[[tenants]]\nname = "acme"\nkey = "k"\nrequests_per_minute = -5\n')
    result = subprocess.run([sys.executable, "-m", "wirespeed", "gateway", "--config", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0] == (f"wirespeed gateway: GatewayConfigError: {path}: [[tenants]] #1 'acme': "
                        f"requests_per_minute=-5 is invalid: must be a number > 0 (leave it out for no limit)")
    assert lines[1].startswith("hint: ") and len(lines) == 2
