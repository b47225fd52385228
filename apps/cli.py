"""The ``attnrec`` command line: one entry point; every flag is a field of the command's settings.

Each command names its settings class (the base :class:`~attnrec.settings.Settings` or the
tool's subclass) and the fields it exposes as flags (:data:`COMMANDS`); a flag's type, help and
default come from the field, and its value overrides the field's ``ATTNREC_*`` variable. The
command's settings are built and checked once, before it runs: a bad value ends the command
with one line naming the variable (and flag), the value and what is expected, exit status 2.

Commands whose code needs torch (train, eval, export, trainer, bench) import it only when run,
so ``attnrec worker`` works in an image without torch.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import re
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from attnrec import __version__
from attnrec.errors import AttnrecError, ConfigError, ModelError
from attnrec.settings import Settings, env_name, load_settings

from ..exporter.settings import ModelsSettings, TrainerSettings
from ..training.settings import PrequentialSettings, TrainingSettings, option_flags
from .bench.settings import BenchSettings
from .dashboard.settings import DashboardSettings
from .settings import DemoSettings, ReplayCheckSettings, ReplaySettings
from .stack.settings import StackSettings

__all__ = ["COMMANDS", "Command", "build_parser", "main", "setup_logging", "settings_classes"]

log = logging.getLogger("attnrec")

Handler = Callable[[Settings, argparse.Namespace], int]


@dataclass(frozen=True)
class Command:
    """A sub-command: its handler (``module:function``, imported when it runs), its settings
    class and its flags as ``(flag, settings field)`` pairs; ``alias`` flags are extra
    spellings of a flag."""

    name: str
    help: str
    handler: str
    flags: tuple[tuple[str, str], ...] = ()
    settings: type[Settings] = Settings
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    positionals: tuple[tuple[str, dict[str, Any]], ...] = ()
    subcommands: tuple[Command, ...] = ()


_HOME = (("--home", "home"),)
_REGISTRY = (("--registry", "registry"),)
_GATE = (("--force", "force"), ("--margin", "margin"))
_DATA = (("--data", "data"), ("--format", "data_format"), ("--columns", "data_columns"), ("--types", "data_types"),
         ("--time-unit", "data_time_unit"), ("--min-item-support", "data_min_item_support"), ("--quiet", "quiet"))
_FEATURES = (("--no-types", "train_no_types"), ("--no-gaps", "train_no_gaps"))

COMMANDS: tuple[Command, ...] = (
    Command("stack", "local Kafka (KRaft) + Redis: up | down | status (up --brokers 3 --redis-cluster: a 3-broker "
            "cluster and a Redis Cluster)", "attnrec.apps.stack:cmd_stack",
            (("--brokers", "brokers"), ("--redis-cluster", "redis_cluster"), *_HOME),
            StackSettings, positionals=(("action", {"choices": ["up", "down", "status"]}),)),
    Command("worker", "run the streaming worker (faust)", "attnrec.apps.cli:cmd_worker",
            (("--batch-size", "batch_size"), ("--batch-wait-ms", "batch_wait_ms"), ("--web-port", "web_port"),
             ("--web-host", "web_host"), ("--group-id", "group_id"), ("--scorer", "scorer"), *_REGISTRY, *_HOME)),
    Command("replay", "produce click events to the clicks topic", "attnrec.apps.replay:cmd_replay",
            (("--data", "replay_data"), ("--format", "replay_format"), ("--columns", "replay_columns"),
             ("--types", "replay_types"), ("--time-unit", "replay_time_unit"), ("--order", "replay_order"),
             ("--synthetic", "replay_synthetic"), ("--rate", "replay_rate"),
             ("--count", "replay_count"), ("--seed", "replay_seed"), ("--topic", "replay_topic"),
             ("--scenario", "replay_scenario"), ("--burst-at", "replay_burst_at_s"), ("--burst-s", "replay_burst_s"),
             ("--burst-factor", "replay_burst_factor"), *_HOME), ReplaySettings),
    Command("demo", "the main job, end to end on the local stack", "attnrec.apps.demo:cmd_demo",
            (("--events", "demo_events"), ("--rate", "demo_rate"), ("--train-seconds", "demo_train_seconds"),
             ("--keep-stack", "demo_keep_stack"), ("--scenario", "demo_scenario"), *_HOME), DemoSettings),
    Command("train", "train a model (defaults chosen from the data; early stopping on validation NDCG@10)",
            "attnrec.training.cli:cmd_train",
            (*_DATA, ("--out", "train_out"), *option_flags("train"), *_FEATURES, ("--items", "train_items")),
            TrainingSettings),
    Command("eval", "leave-one-out full-ranking evaluation of a checkpoint (--model), of the attention model trained "
            "here (--train) or of a baseline trained here (--baseline; evaluation only, never exported); --noise "
            "trains and evaluates on noisy data", "attnrec.training.cli:cmd_eval",
            (*_DATA, ("--model", "eval_model"), ("--baseline", "eval_baseline"), ("--train", "eval_train"),
             ("--noise", "eval_noise"), ("--keep-history", "eval_keep_history"), ("--split", "eval_split"),
             ("--json", "eval_json"), ("--compare", "eval_compare"), *option_flags("eval"), *_FEATURES), TrainingSettings),
    Command("prequential", "every method on a log's next events, event by event, retrained every --every of event time as the "
            "periodic trainer does: HR@10, NDCG@10, MRR@20 with 95 % bootstrap intervals, per day or hour, with seen items "
            "excluded and allowed", "attnrec.training.prequential_cli:cmd_prequential",
            (*_DATA, ("--start", "preq_start"), ("--every", "preq_every"), ("--end", "preq_end"),
             ("--test-from", "preq_test_from"), ("--methods", "preq_methods"), ("--epochs", "preq_epochs"),
             ("--holdout", "preq_holdout"),
             ("--margin", "preq_margin"), ("--exclude-window", "preq_exclude_window"),
             ("--trending-window-s", "preq_trending_window_s"), ("--trending-weights", "preq_trending_weights"),
             ("--knn-k", "preq_knn_k"), ("--knn-sample", "preq_knn_sample"), ("--per", "preq_per"),
             ("--resamples", "preq_resamples"), ("--reference", "preq_reference"), ("--json", "preq_json"),
             ("--plot", "preq_plot"), ("--threads", "train_threads"), ("--seed", "train_seed")), PrequentialSettings),
    Command("replay-check", "replay a log through Kafka into a worker, with the periodic trainer and hot swaps every "
            "--every of event time, and check its online counters against the prequential evaluation of the same events",
            "attnrec.apps.served:cmd_replay_check",
            (*_DATA, ("--start", "preq_start"), ("--every", "preq_every"), ("--end", "preq_end"), ("--epochs", "preq_epochs"),
             ("--holdout", "preq_holdout"),
             ("--margin", "preq_margin"), ("--tolerance", "check_tolerance"),
             ("--json", "check_json"), ("--keep", "check_keep"), ("--exclude-seen", "exclude_seen"),
             ("--exclude-window", "exclude_window"), ("--trending-window-s", "trending_window_s"),
             ("--threads", "train_threads"), ("--resamples", "preq_resamples"), *_HOME), ReplayCheckSettings),
    Command("export", "export a checkpoint to ONNX, check it and publish it to the registry", "attnrec.exporter.cli:cmd_export",
            (("--checkpoint", "checkpoint"), *_REGISTRY, ("--promote", "promote"), *_GATE, ("--top-k", "top_k"),
             ("--quantize", "quantize"), *_HOME), ModelsSettings),
    Command("models", "list, promote or roll back registry versions", "", subcommands=(
        Command("list", "versions, newest first; * marks CURRENT", "attnrec.exporter.cli:cmd_models_list",
                (*_REGISTRY, ("--json", "models_json"), *_HOME), ModelsSettings),
        Command("promote", "promote a published version through the NDCG@10 gate (and the online gate with --online-margin)",
                "attnrec.apps.rollout:cmd_models_promote",
                (*_REGISTRY, *_GATE, ("--online-margin", "online_margin"), ("--online-min-events", "online_min_events"),
                 *_HOME), ModelsSettings, positionals=(("version", {}),)),
        Command("shadow", "shadow-score VERSION beside CURRENT on live traffic; no VERSION: the comparison so far; --off: stop",
                "attnrec.apps.rollout:cmd_models_shadow", (*_REGISTRY, ("--off", "shadow_off"), ("--json", "models_json"), *_HOME),
                ModelsSettings, positionals=(("version", {"nargs": "?"}),)),
        Command("rollback", "make the previously promoted version CURRENT again", "attnrec.exporter.cli:cmd_models_rollback",
                (*_REGISTRY, ("--reason", "rollback_reason"), *_HOME), ModelsSettings),
    )),
    Command("schema", "the topics' JSON Schemas (docs/schemas/README.md): show one, validate JSON lines", "", subcommands=(
        Command("show", "print a schema as JSON", "attnrec.apps.schema:cmd_show",
                positionals=(("name", {"help": "clicks, recs, clicks.dlq, model-updates or catalog (recs/1: a major)"}),)),
        Command("validate", "check JSON lines (FILE, or stdin) against a schema: line N: <reason>; exit 1 if any is invalid",
                "attnrec.apps.schema:cmd_validate",
                positionals=(("name", {"help": "the schema, as for show"}),
                             ("file", {"nargs": "?", "default": "-", "help": "JSON lines (default: stdin)"}))),
    )),
    Command("trainer", "periodic archive -> retrain -> export -> gated promote (or shadow, then promote)",
            "attnrec.apps.rollout:cmd_trainer",
            (("--every", "trainer_every"), ("--rollout", "trainer_rollout"), ("--online-margin", "online_margin"),
             ("--online-min-events", "online_min_events"), ("--once", "trainer_once"), ("--events-dir", "events_dir"),
             ("--kafka-bootstrap", "kafka_bootstrap"), ("--clicks-topic", "clicks_topic"),
             ("--trainer-group", "trainer_group"), ("--min-new-events", "min_new_events"), ("--epochs", "trainer_epochs"),
             ("--max-minutes", "trainer_max_minutes"), ("--threads", "trainer_threads"), ("--top-k", "top_k"),
             ("--min-item-support", "trainer_min_item_support"), ("--holdout", "trainer_holdout"),
             *_REGISTRY, *_GATE, *_HOME), TrainerSettings),
    Command("bench", "end-to-end throughput/latency benchmark against the stack", "attnrec.apps.bench.cli:cmd_bench",
            tuple((f"--{f.removeprefix('bench_').replace('_', '-')}", f) for f in BenchSettings.model_fields
                  if f.startswith("bench_") and f not in ("bench_md",))
            + (("--benchmarks-md", "bench_md"), ("--batch-size", "batch_size"), ("--scorer", "scorer"), ("--quiet", "quiet"),
               ("--processing-guarantee", "processing_guarantee"), *_HOME), BenchSettings),
    Command("dashboard", "ops dashboard web page (throughput, latency, lag, dead letters, models, live feed)",
            "attnrec.apps.dashboard:cmd_dashboard",
            (("--dashboard-host", "dashboard_host"), ("--dashboard-port", "dashboard_port"),
             ("--latency-window-s", "latency_window_s"), ("--feed-backfill", "feed_backfill"),
             ("--latency-join", "latency_join"), ("--group-id", "group_id"), ("--kafka-bootstrap", "kafka_bootstrap"),
             ("--redis-url", "redis_url"), *_REGISTRY, *_HOME), DashboardSettings,
            aliases={"--dashboard-host": ("--host",), "--dashboard-port": ("--port",)}),
)


def settings_classes() -> list[type[Settings]]:
    """Every command's settings class, the base first, each once (docs/CONFIGURATION.md's order)."""
    out: list[type[Settings]] = [Settings]
    todo = list(COMMANDS)
    while todo:
        cmd = todo.pop(0)
        todo += cmd.subcommands
        if not cmd.subcommands and cmd.settings not in out:
            out.append(cmd.settings)
    return out


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("kafka", "aiokafka", "faust", "mode"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


# ------------------------------------------------------------------------------------- parser
def _is_bool(annotation: Any) -> bool:
    return annotation is bool or (typing.get_origin(annotation) in (typing.Union, types.UnionType)
                                  and bool in typing.get_args(annotation))


def _choices(annotation: Any) -> list[str] | None:
    for a in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(a) is typing.Literal:
            return [str(x) for x in typing.get_args(a)]
    return None


def _add_flag(p: argparse.ArgumentParser, cls: type[Settings], flag: str, name: str, aliases: tuple[str, ...] = ()) -> None:
    """One flag for a field of ``cls``: its value stays a string (the settings class converts
    and checks it, so a bad flag gets the same message as a bad variable); default None = unset."""
    f = cls.model_fields[name]
    desc = (f.description or "").split(": ", 1)[-1] if ": " in (f.description or "") else ""
    default = "unset" if f.default is None else f.default
    said = re.search(r" \(unset: ([^()]*)\)$", desc)  # a training option says what unset means
    if f.default is None and said:
        desc, default = desc[: said.start()], said.group(1)
    text = f"{desc} ({env_name(name)}; default {default})".strip().replace("%", "%%")
    kw: dict[str, Any] = {"dest": name, "default": None, "help": text}
    if _is_bool(f.annotation):
        if flag.startswith("--no-"):
            p.add_argument(flag, *aliases, action="store_const", const=True, **kw)
        else:
            p.add_argument(flag, *aliases, action=argparse.BooleanOptionalAction, **kw)
        return
    if typing.get_origin(f.annotation) is list or list in [typing.get_origin(a) for a in typing.get_args(f.annotation)]:
        kw["nargs"] = "+"
    choices = _choices(f.annotation)
    if choices:
        kw["choices"] = choices
    p.add_argument(flag, *aliases, metavar=name.upper() if not choices else None, **kw)


def _add_command(sub: Any, cmd: Command) -> None:
    p = sub.add_parser(cmd.name, help=cmd.help.replace("%", "%%"), description=cmd.help.replace("%", "%%"))
    if cmd.subcommands:
        inner = p.add_subparsers(dest=f"{cmd.name}_command", required=True, metavar="COMMAND")
        for c in cmd.subcommands:
            _add_command(inner, c)
        return
    for name, kw in cmd.positionals:
        p.add_argument(name, **kw)
    for flag, name in cmd.flags:
        _add_flag(p, cmd.settings, flag, name, cmd.aliases.get(flag, ()))
    p.set_defaults(_handler=cmd.handler, _flags=dict((n, f) for f, n in cmd.flags), _settings=cmd.settings)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="attnrec", description="Real-time attention-based recommendations over event streams. "
                                "Every flag also reads its ATTNREC_* variable (see docs/CONFIGURATION.md).")
    p.add_argument("--version", action="version", version=f"attnrec {__version__}")
    _add_flag(p, Settings, "--log-level", "log_level")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in COMMANDS:
        _add_command(sub, cmd)
    return p


def _resolve(handler: str) -> Handler:
    module, _, fn = handler.partition(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"this command needs a part of attnrec that is not installed ({exc.name}); "
                          "install the training extra: pip install 'attnrec[train]'") from None
    return getattr(mod, fn)  # type: ignore[no-any-return]


# ------------------------------------------------------------------------------------- commands run here
def cmd_worker(s: Settings, args: argparse.Namespace) -> int:
    """``attnrec worker``: create missing topics, then serve until SIGTERM/SIGINT."""
    from ..stream.runner import run_worker

    factory = None
    if s.scorer == "torch":
        from ..exporter.eager import torch_session_factory  # needs torch: the benchmark's baseline only

        factory = torch_session_factory(s.ort_threads)
    run_worker(s, session_factory=factory)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    flags = dict(args._flags)
    flags["log_level"] = "--log-level"
    overrides = {name: getattr(args, name) for name in flags if getattr(args, name, None) is not None}
    try:
        known = set().union(*(c.variables() for c in settings_classes()))
        s = load_settings(args._settings, flags={name: flags[name] for name in overrides}, known=known, **overrides)
    except ConfigError as exc:
        print(f"attnrec: error: {exc}", file=sys.stderr)
        return 2
    setup_logging(s.log_level)
    try:
        if argv is None and args._handler.startswith("attnrec.training."):  # started from the shell
            from attnrec.training.allocator import reexec

            reexec(s.train_allocator, sys.argv[1:])
        rc = _resolve(args._handler)(s, args)
    except ConfigError as exc:
        print(f"attnrec: error: {exc}", file=sys.stderr)
        return 2
    except AttnrecError as exc:
        log.error("%s", exc)
        return 1 if isinstance(exc, ModelError) else 2
    except KeyboardInterrupt:
        return 130
    return int(rc or 0)


def print_json(obj: Any) -> None:
    """A command's machine-readable result on stdout."""
    sys.stdout.write(json.dumps(obj, indent=1, default=str) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())

