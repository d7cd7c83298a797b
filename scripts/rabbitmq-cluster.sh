#!/usr/bin/env bash
# A RabbitMQ cluster of private nodes on this machine, for the tests that stop, kill and restart
# brokers (tests/cluster, tests/broker_restart) without touching the machine's own broker
# (rabbit@localhost on 5672, which this script never addresses).
#
#   scripts/rabbitmq-cluster.sh start            # fresh nodes 1..N, nodes 2..N joined to node 1
#   scripts/rabbitmq-cluster.sh urls             # the AMQP URLs, comma-separated
#   scripts/rabbitmq-cluster.sh stop-node N      # graceful: `rabbitmqctl stop` (the whole node)
#   scripts/rabbitmq-cluster.sh kill-node N      # SIGKILL of the node's beam process
#   scripts/rabbitmq-cluster.sh start-node N     # starts node N again on its data, waits for it
#   scripts/rabbitmq-cluster.sh leader QUEUE     # the node leading quorum queue QUEUE
#   scripts/rabbitmq-cluster.sh status           # cluster_status as a running node sees it
#   scripts/rabbitmq-cluster.sh teardown         # stops every node (kills what will not stop),
#                                                # removes the data; safe to run any time
#
# Settings (environment):
#   CQRS_CLUSTER_NAME   node name prefix (default cqrs-c: nodes cqrs-c1@localhost, ...)
#   CQRS_CLUSTER_NODES  how many nodes (default 3)
#   CQRS_CLUSTER_PORT   node 1's AMQP port (default 5701; node N: PORT + N - 1; distribution
#                       port: AMQP port + 20000)
#   CQRS_CLUSTER_DIR    where data and logs live (default /var/tmp/cqrs-cluster/<name>)
#
# Each node runs as the `rabbitmq` user (rabbitmq-server and rabbitmqctl switch to it when run
# as root) with that user's Erlang cookie, listens on 127.0.0.1 only, has no plugin (no
# management), and lets guest/guest in from the loopback interface. `start` first tears down
# whatever an earlier run left, so it is idempotent. Every rabbitmqctl call has a time limit.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

NAME=${CQRS_CLUSTER_NAME:-cqrs-c}
NODES=${CQRS_CLUSTER_NODES:-3}
PORT=${CQRS_CLUSTER_PORT:-5701}
DIR=${CQRS_CLUSTER_DIR:-/var/tmp/cqrs-cluster/$NAME}
CTL_TIMEOUT=${CQRS_CLUSTER_CTL_TIMEOUT:-60}

log() { printf '[rabbitmq-cluster %s] %s\n' "$NAME" "$*" >&2; }
die() { log "error: $*"; exit 1; }

case "$NAME" in
  rabbit | rabbit@*) die "refusing the shared node's name $NAME" ;;
esac

node_name() { echo "$NAME$1@localhost"; }
amqp_port() { echo $((PORT + $1 - 1)); }
dist_port() { echo $((PORT + $1 - 1 + 20000)); }
node_dir() { echo "$DIR/n$1"; }
pid_file() { echo "$(node_dir "$1")/rabbit.pid"; }

check_index() {
  [[ "$1" =~ ^[0-9]+$ ]] && (($1 >= 1 && $1 <= NODES)) || die "no node $1 (1..$NODES)"
}

# rabbitmqctl against one of our nodes, with a time limit.
ctl() {
  local n=$1; shift
  (cd /tmp && timeout "$CTL_TIMEOUT" rabbitmqctl -q -n "$(node_name "$n")" "$@")
}

# ctl, its output shown only when it fails (join_cluster logs warnings that are normal).
quiet() {
  local n=$1 out; shift
  out=$(ctl "$n" "$@" 2>&1) || { printf '%s\n' "$out" >&2; die "rabbitmqctl -n $(node_name "$n") $* failed"; }
}

node_pid() {
  local file; file=$(pid_file "$1")
  [ -s "$file" ] && tr -dc '0-9' <"$file"
}

alive() {
  local pid; pid=$(node_pid "$1") || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

prepare_dirs() {
  local n=$1 d; d=$(node_dir "$n")
  mkdir -p "$d/mnesia" "$d/log"
  echo '[].' >"$d/enabled_plugins"
  cat >"$d/rabbitmq.conf" <<EOF
listeners.tcp.local = 127.0.0.1:$(amqp_port "$n")
loopback_users.guest = true
EOF
  # An env file of our own, so that /etc/rabbitmq/rabbitmq-env.conf (the shared node's
  # NODENAME) is not read.
  cat >"$d/rabbitmq-env.conf" <<EOF
ERL_EPMD_ADDRESS=127.0.0.1
export ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"
EOF
  chown -R rabbitmq:rabbitmq "$DIR"
  chmod 755 "$DIR" "$(dirname "$DIR")"
}

# Starts node N (detached) without waiting.
launch() {
  local n=$1 d; d=$(node_dir "$n")
  if alive "$n"; then log "node $n already runs"; return 0; fi
  rm -f "$(pid_file "$n")"
  (cd /tmp && RABBITMQ_NODENAME=$(node_name "$n") \
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT=$(amqp_port "$n") \
    RABBITMQ_DIST_PORT=$(dist_port "$n") \
    RABBITMQ_MNESIA_BASE="$d/mnesia" \
    RABBITMQ_LOG_BASE="$d/log" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins" \
    RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf" \
    RABBITMQ_CONF_ENV_FILE="$d/rabbitmq-env.conf" \
    RABBITMQ_PID_FILE="$(pid_file "$n")" \
    rabbitmq-server -detached >/dev/null 2>&1) || die "rabbitmq-server for node $n failed"
}

# Waits until node N has booted (await_startup fails until the node is registered with epmd).
await_node() {
  local n=$1 deadline=$((SECONDS + ${2:-120}))
  until ctl "$n" await_startup --timeout 30 >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "node $n did not start within ${2:-120}s (logs: $(node_dir "$n")/log)"
    sleep 0.5
  done
}

start_node() {
  check_index "$1"
  [ -d "$(node_dir "$1")" ] || die "node $1 has no data directory: run start first"
  launch "$1"
  await_node "$1"
  log "node $1 ($(node_name "$1"), port $(amqp_port "$1")) is up"
}

stop_node() {
  check_index "$1"
  local n=$1 pid
  pid=$(node_pid "$n") || true
  if ! alive "$n"; then log "node $n is not running"; return 0; fi
  # `stop <pid file>` returns once the node's OS process has ended.
  if ! ctl "$n" stop "$(pid_file "$n")" >/dev/null 2>&1; then
    log "node $n did not stop cleanly: SIGKILL"
    kill_node "$n"
    return 0
  fi
  log "node $n stopped (pid $pid)"
}

kill_node() {
  check_index "$1"
  local n=$1 pid deadline=$((SECONDS + 30))
  pid=$(node_pid "$n") || { log "node $n has no pid file"; return 0; }
  [ -n "$pid" ] || return 0
  kill -9 "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do
    ((SECONDS < deadline)) || die "node $n (pid $pid) survived SIGKILL for 30 s"
    sleep 0.1
  done
  log "node $n killed (pid $pid)"
}

teardown() {
  local n pids=()
  for n in $(seq "$NODES"); do
    if alive "$n"; then
      pids+=("$(node_pid "$n")")
      ctl "$n" stop "$(pid_file "$n")" >/dev/null 2>&1 &
    fi
  done
  wait || true
  for n in $(seq "$NODES"); do
    if alive "$n"; then kill_node "$n" || true; fi
  done
  rm -rf "$DIR"
  log "torn down${pids:+ (stopped pids ${pids[*]})}"
}

start() {
  teardown
  local n
  for n in $(seq "$NODES"); do prepare_dirs "$n"; done
  for n in $(seq "$NODES"); do launch "$n"; done
  for n in $(seq "$NODES"); do await_node "$n"; done
  for n in $(seq 2 "$NODES"); do
    quiet "$n" stop_app
    quiet "$n" reset
    quiet "$n" join_cluster "$(node_name 1)"
    quiet "$n" start_app
    await_node "$n"
  done
  if ((NODES > 1)); then
    local running
    running=$(ctl 1 eval 'length(rabbit_nodes:all_running()).' | tr -dc '0-9')
    [ "$running" = "$NODES" ] || die "the cluster runs $running of $NODES nodes"
  fi
  log "$NODES node(s) up: $(urls)"
}

urls() {
  local n out=()
  for n in $(seq "$NODES"); do out+=("amqp://guest:guest@127.0.0.1:$(amqp_port "$n")/%2f"); done
  (IFS=,; echo "${out[*]}")
}

leader() {
  local queue=$1 n line
  for n in $(seq "$NODES"); do
    alive "$n" || continue
    if line=$(ctl "$n" list_queues name leader 2>/dev/null | awk -v q="$queue" '$1 == q { print $2 }'); then
      if [ -n "$line" ]; then
        line=${line%@localhost}
        echo "${line#"$NAME"}"
        return 0
      fi
    fi
  done
  die "no running node knows a leader of $queue"
}

status() {
  local n
  for n in $(seq "$NODES"); do
    if alive "$n"; then ctl "$n" cluster_status; return 0; fi
  done
  die "no node runs"
}

[ "$(id -u)" -eq 0 ] || die "run as root (the nodes run as the rabbitmq user)"
cmd=${1:-}
case "$cmd" in
  start) start ;;
  stop-node) stop_node "${2:?node number}" ;;
  kill-node) kill_node "${2:?node number}" ;;
  start-node) start_node "${2:?node number}" ;;
  leader) leader "${2:?queue name}" ;;
  urls) urls ;;
  status) status ;;
  teardown) teardown ;;
  *) die "usage: $0 start|stop-node N|kill-node N|start-node N|leader QUEUE|urls|status|teardown" ;;
esac
