#!/usr/bin/env bash
# System prerequisites for the local stack and browser tests, from Debian's packages.
# Idempotent; needs root for apt-get (otherwise prints what to install and continues).
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v openssl >/dev/null 2>&1 || need+=(openssl)  # test certificates for the TLS tests
command -v kcat >/dev/null 2>&1 || need+=(kcat)  # docs/examples/kcat.sh, run by tests/integration/test_schema_contract.py
command -v promtool >/dev/null 2>&1 || need+=(prometheus)  # promtool checks and tests deploy/compose/alerts.yml
if [[ "${ATTNREC_SKIP_CHROMIUM:-0}" != "1" ]]; then
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
fi
# training runs under jemalloc (training/allocator.py); redis-server pulls it in on Debian, but ask for it by name
[[ -e /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 || -e /usr/lib/aarch64-linux-gnu/libjemalloc.so.2 ]] || need+=(libjemalloc2)
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || [[ -n "${KAFKA_HOME:-}" ]] || need+=(maven)
if ((${#need[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing ${need[*]} from Debian's packages"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
    if [[ " ${need[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null 2>&1; then
      # only its promtool is wanted: the package's server (and node exporter) stay off
      systemctl disable --now prometheus prometheus-node-exporter >/dev/null 2>&1 || true
    fi
  else
    echo "setup: missing ${need[*]}; install them (Debian: apt-get install ${need[*]})" >&2
    exit 1
  fi
fi
