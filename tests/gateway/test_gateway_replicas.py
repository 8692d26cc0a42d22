"""Session affinity across replicas: two ``wirespeed gateway`` processes started from the same file send every
``x-session-id`` to the same backend (their Toeplitz keys come from the file, ``config.device_secret``)."""

from __future__ import annotations

import json
import selectors
import subprocess
import sys
import time

import openai

from tests.support.gateway_rig import GatewayRig, config_text

TENANTS = """
[[tenants]]
name = "acme"
key = "sk-acme-1"
"""


def _start(config_path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "wirespeed", "gateway", "--config", str(config_path), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout=60):
            proc.kill()
            raise AssertionError(f"no ready line in 60 s: {proc.stderr.read()}")
    line = proc.stdout.readline()
    assert line, proc.stderr.read()
    return proc, "http://" + json.loads(line)["ready"]["listen"]


def test_two_replicas_send_each_session_to_the_same_backend(tmp_path):
    with GatewayRig(TENANTS, n_mocks=3) as rig:            # its mocks serve both replicas
        urls = [m.url for m in rig.mocks]
        path = tmp_path / "gw.toml"
        path.write_text(config_text(urls, tenants=TENANTS).replace('hash_secret = "test"', 'hash_secret = "r"'))
        replicas = []
        try:
            for _ in range(2):
                replicas.append(_start(path))
            seen = []
            for _, base in replicas:
                client = openai.OpenAI(base_url=base + "/v1", api_key="sk-acme-1", max_retries=0, timeout=20)
                seen.append({s: client.chat.completions.with_raw_response.create(
                    model="gpt-4o-mini", max_tokens=2, messages=[{"role": "user", "content": "hi"}],
                    extra_headers={"x-session-id": s}).headers["x-mock-backend"] for s in map(str, range(30))})
            assert seen[0] == seen[1]
            assert set(seen[0].values()) == {"mock-1", "mock-2", "mock-3"}   # and the sessions are spread
        finally:
            for proc, _ in replicas:
                proc.terminate()
            deadline = time.monotonic() + 10
            for proc, _ in replicas:
                proc.wait(max(0.1, deadline - time.monotonic()))
            assert [proc.returncode for proc, _ in replicas] == [0] * len(replicas)
