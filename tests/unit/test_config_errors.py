"""A bad setting ends any command with one line naming the variable (and flag), the value and
what is expected, exit status 2, and no traceback: one test per kind of check."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from attnrec.errors import ConfigError
from attnrec.settings import load_settings


def run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ATTNREC_")}
    return subprocess.run([sys.executable, "-m", "attnrec.apps", *args], env={**clean, **env}, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize(("args", "env", "message"), [
    (["worker"], {"ATTNREC_BATCH_SIZE": "abc"}, "ATTNREC_BATCH_SIZE='abc': expected an integer"),  # type
    (["worker"], {"ATTNREC_BATCH_SIZE": "0"}, "ATTNREC_BATCH_SIZE='0': expected a number >= 1"),  # range
    (["worker"], {"ATTNREC_REDIS_URL": "garbage"}, "ATTNREC_REDIS_URL='garbage': expected a redis://, rediss:// or unix:// URL"),
    (["worker"], {"ATTNREC_WEB_PORT": "0"}, "ATTNREC_WEB_PORT='0': expected a number >= 1"),  # port
    (["worker", "--web-port", "70000"], {}, "ATTNREC_WEB_PORT (--web-port)='70000': expected a number <= 65535"),
    (["worker"], {"ATTNREC_KAFKA_BOOTSTRAP": "broker"}, "ATTNREC_KAFKA_BOOTSTRAP='broker': expected host:port"),
    (["worker"], {"ATTNREC_SCORER": "tf"}, "ATTNREC_SCORER='tf': expected one of onnx or torch"),
    (["worker"], {"ATTNREC_EXCLUDE_SEEN": "maybe"}, "ATTNREC_EXCLUDE_SEEN='maybe': expected true or false"),
    (["bench", "--rate", "fast"], {}, "ATTNREC_BENCH_RATE (--rate)='fast': expected a positive number of events/s or 'max'"),
    (["trainer"], {"ATTNREC_TRAINER_EVERY": "soon"}, "ATTNREC_TRAINER_EVERY='soon': expected a duration"),
    (["train", "--epochs", "-3"], {}, "ATTNREC_TRAIN_EPOCHS (--epochs)='-3': expected a number >= 1"),
    (["replay", "--rate", "fast"], {}, "ATTNREC_REPLAY_RATE (--rate)='fast': expected a positive number of events/s or 'max'"),
    (["demo"], {"ATTNREC_DEMO_EVENTS": "5"}, "ATTNREC_DEMO_EVENTS='5': expected a number >= 100"),
    (["dashboard", "--port", "0"], {}, "ATTNREC_DASHBOARD_PORT (--dashboard-port)='0': expected a number >= 1"),
    (["stack", "status"], {"ATTNREC_REDIS_APPENDFSYNC": "no"}, "ATTNREC_REDIS_APPENDFSYNC='no': expected one of everysec or always"),
])  # fmt: skip
def test_bad_setting_is_one_line_exit_2(args: list[str], env: dict[str, str], message: str) -> None:
    r = run(args, **env)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("attnrec: error: ") and message in lines[0], r.stderr


def test_unknown_variable_is_reported_with_the_closest_setting(caplog: pytest.LogCaptureFixture,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATTNREC_BATCHSIZE", "3")
    with caplog.at_level("WARNING"):
        load_settings()
    assert "ATTNREC_BATCHSIZE is not an attnrec setting (did you mean ATTNREC_BATCH_SIZE?)" in caplog.text


def test_secret_values_are_never_echoed() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(api_token=" ")
    assert "ATTNREC_API_TOKEN" in str(err.value) and "' '" not in str(err.value)


def test_a_command_missing_its_input_says_which_setting() -> None:
    r = run(["replay"])
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "--data FILE (ATTNREC_REPLAY_DATA) or --synthetic (ATTNREC_REPLAY_SYNTHETIC)" in r.stderr
