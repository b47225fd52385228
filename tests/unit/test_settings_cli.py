from __future__ import annotations

import subprocess
import sys

import pytest
from attnrec.apps.cli import build_parser
from attnrec.stream.runner import _safe_url

from attnrec.errors import ConfigError
from attnrec.settings import load_settings


def test_environment_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATTNREC_BATCH_SIZE", "64")
    monkeypatch.setenv("ATTNREC_CLICKS_TOPIC", "events")
    s = load_settings(batch_wait_ms=2.5)
    assert (s.batch_size, s.clicks_topic, s.batch_wait_ms) == (64, "events", 2.5)
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="frozen"):
        s.batch_size = 3  # type: ignore[misc]


def test_invalid_settings_raise_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATTNREC_BATCH_SIZE", "zero")
    with pytest.raises(ConfigError, match="ATTNREC_BATCH_SIZE"):
        load_settings()


def test_non_loopback_bind_needs_a_token() -> None:
    with pytest.raises(ConfigError, match="ATTNREC_API_TOKEN"):
        load_settings(web_host="0.0.0.0")
    assert load_settings(web_host="0.0.0.0", api_token="s3cret").api_token is not None


def test_sasl_needs_a_user() -> None:
    with pytest.raises(ConfigError, match="KAFKA_USERNAME"):
        load_settings(kafka_security_protocol="SASL_PLAINTEXT")


def test_secrets_are_masked_in_logged_urls() -> None:
    assert _safe_url("redis://user:pw@host:6379/0") == "redis://***@host:6379/0"
    assert _safe_url("redis://host:6379/0") == "redis://host:6379/0"


def test_every_documented_command_is_registered() -> None:
    p = build_parser()
    sub = next(a for a in p._actions if a.dest == "command")
    cmds = set(sub.choices)  # type: ignore[arg-type]
    assert {"stack", "worker", "demo", "replay", "train", "eval", "export", "models"} <= cmds


def test_worker_imports_without_torch() -> None:
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.') or name.startswith('attnrec.training'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import attnrec.stream.app, attnrec.stream.runner, attnrec.modelcheck, attnrec.apps.cli\n"
        "attnrec.apps.cli.build_parser()\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
