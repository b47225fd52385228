"""Shared start-up of the docs/bench scripts: a fresh local stack, one worker subprocess
(ATTNREC_* overrides as KEY=VALUE command-line arguments) serving the bench's cached random
12k-item, L=50 model (`attnrec.bench.ensure_model`), ready before it returns."""
import os, sys, subprocess, time, urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root
from attnrec.bench import ensure_model
from attnrec.kafka_util import ensure_topics
from attnrec.settings import Settings
from attnrec.stack import LocalStack, free_port

WORK = Path(os.environ.get("ATTNREC_BENCH_WORK", "/tmp/attnrec-bench-work"))


def start(name: str, overrides: list[str]):
    """(stack, settings, worker process, web port, item ids of the model)."""
    root = WORK / name
    root.mkdir(parents=True, exist_ok=True)
    reg, items = ensure_model(WORK, 12000, 50)
    st = LocalStack(root / "stack", kafka_port=free_port(), controller_port=free_port(), redis_port=free_port())
    st.up()
    s = Settings(kafka_bootstrap=st.bootstrap, redis_url=st.redis_url, registry=reg, home=root)
    ensure_topics(s)
    port = free_port()
    env = dict(os.environ, ATTNREC_KAFKA_BOOTSTRAP=st.bootstrap, ATTNREC_REDIS_URL=st.redis_url, ATTNREC_REGISTRY=str(reg),
               ATTNREC_HOME=str(root), ATTNREC_WEB_PORT=str(port), **dict(a.split("=", 1) for a in overrides))
    w = subprocess.Popen([sys.executable, "-m", "attnrec", "worker"], env=env, stdout=open(root / "w.log", "ab"),
                         stderr=subprocess.STDOUT, start_new_session=True)
    for _ in range(240):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1)
            break
        except Exception:
            time.sleep(0.5)
    return st, s, w, port, items


def stop(st, w) -> None:
    os.killpg(w.pid, 15)
    w.wait(30)
    st.down()
