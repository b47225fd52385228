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
    """The worker's modules and the command line (which reads every command's settings class,
    training's too) import neither torch nor any training code but the torch-free settings."""
    code = (
        "import sys, importlib.abc\n"
        "ALLOWED = ('attnrec.training', 'attnrec.training.config', 'attnrec.training.settings')\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.') or (\n"
        "                name.startswith('attnrec.training') and name not in ALLOWED):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import attnrec.stream.app, attnrec.stream.runner, attnrec.modelcheck, attnrec.apps.cli\n"
        "attnrec.apps.cli.build_parser().parse_args(['worker'])\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_each_command_builds_its_own_settings_and_the_worker_the_base() -> None:
    from attnrec.apps.bench.settings import BenchSettings
    from attnrec.apps.cli import settings_classes
    from attnrec.exporter.settings import TrainerSettings
    from attnrec.training.settings import TrainingSettings

    from attnrec.settings import Settings

    p = build_parser()
    assert p.parse_args(["worker"])._settings is Settings
    assert p.parse_args(["train"])._settings is p.parse_args(["eval"])._settings is TrainingSettings
    assert p.parse_args(["trainer"])._settings is TrainerSettings
    assert p.parse_args(["bench"])._settings is BenchSettings
    classes = settings_classes()
    assert classes[0] is Settings and all(issubclass(c, Settings) for c in classes)
    tool_fields = {n for c in classes[1:] for n in c.model_fields} - set(Settings.model_fields)
    assert {"train_epochs", "bench_rate", "replay_rate", "demo_events", "trainer_every", "dashboard_port",
            "checkpoint", "kafka_port"} <= tool_fields  # none of them is the worker's


def test_a_tool_variable_is_no_worker_setting_and_no_typo(monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """A shared environment (compose, a ConfigMap) may hold the trainer's variables: the
    worker ignores them without calling them typos; a real typo is still reported."""
    from attnrec.apps.cli import settings_classes

    from attnrec.settings import Settings

    monkeypatch.setenv("ATTNREC_TRAINER_EPOCHS", "3")
    monkeypatch.setenv("ATTNREC_BENCH_RAET", "3")
    known = set().union(*(c.variables() for c in settings_classes()))
    with caplog.at_level("WARNING"):
        s = load_settings(Settings, known=known)
    assert type(s) is Settings and not hasattr(s, "trainer_epochs")
    assert "ATTNREC_TRAINER_EPOCHS" not in caplog.text
    assert "ATTNREC_BENCH_RAET is not an attnrec setting (did you mean ATTNREC_BENCH_RATE?)" in caplog.text


def test_a_tool_builds_another_tools_settings_from_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo trains with the training settings built from its own: shared fields keep the
    demo's values, the training options still come from the environment, all are checked."""
    from attnrec.apps.settings import DemoSettings
    from attnrec.training.settings import TrainingSettings

    monkeypatch.setenv("ATTNREC_TRAIN_EPOCHS", "7")
    demo = DemoSettings(kafka_bootstrap="broker:9094", kafka_port=9094, demo_train_seconds=5)
    t = TrainingSettings.from_settings(demo, train_max_len=20)
    assert type(t) is TrainingSettings and (t.kafka_bootstrap, t.train_epochs, t.train_max_len) == ("broker:9094", 7, 20)
    assert not hasattr(t, "demo_train_seconds")
    with pytest.raises(ConfigError, match="ATTNREC_TRAIN_MAX_LEN=0: expected a number >= 1"):
        TrainingSettings.from_settings(demo, train_max_len=0)


def test_a_worker_subprocess_gets_the_base_settings_only() -> None:
    from attnrec.apps.bench.settings import BenchSettings
    from attnrec.apps.bench.worker import settings_env

    from attnrec.settings import Settings

    b = BenchSettings(batch_size=32, bench_rate="500")
    worker = settings_env(b, Settings)
    assert worker["ATTNREC_BATCH_SIZE"] == "32" and not any(k.startswith("ATTNREC_BENCH_") for k in worker)
    assert settings_env(b)["ATTNREC_BENCH_RATE"] == "500"


def test_every_commands_help_formats() -> None:
    """argparse formats help strings with %: a command's or a setting's "95 %" must not break
    ``attnrec --help`` (it once did, for the prequential command)."""
    import argparse

    from attnrec.apps.cli import build_parser

    parser = build_parser()
    assert "prequential" in parser.format_help()

    def walk(p: argparse.ArgumentParser) -> int:
        n = 1
        p.format_help()
        for a in p._actions:  # noqa: SLF001
            if isinstance(a, argparse._SubParsersAction):  # noqa: SLF001
                for sp in a.choices.values():
                    n += walk(sp)
        return n

    assert walk(parser) > 15
