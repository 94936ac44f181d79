#!/usr/bin/env bash
# A local three-node RabbitMQ cluster for the cluster tests, CI and the example
# (issue 12): rc1@localhost, rc2@localhost, rc3@localhost, AMQP on
# 127.0.0.1:5681/5682/5683. The machine's own node (rabbit@localhost, 5672) is
# never addressed: every rabbitmqctl call below names its node with -n.
#
#   start           start the three nodes (in parallel) and cluster rc2, rc3 with rc1; fast no-op when running
#   stop            stop the three nodes, and nothing else
#   reset           stop, then delete the cluster's data directory
#   stop-node N     stop node rcN (fault tests)
#   start-node N    start node rcN, wait until it is back in the running cluster
#   status          the cluster's running nodes; non-zero unless all three run
#   urls            the comma-separated AMQP URLs of the three nodes
set -euo pipefail

NODES=(1 2 3)
DIR="${EVSOCK_CLUSTER_DIR:-/var/lib/rabbitmq/evsock-cluster}"
START_TIMEOUT="${EVSOCK_CLUSTER_START_TIMEOUT:-180}"
CTL_TIMEOUT=60

die() { printf 'rabbitmq-cluster: %s\n' "$*" >&2; exit 1; }
log() { printf 'rabbitmq-cluster: %s\n' "$*" >&2; }

node_name() { printf 'rc%s@localhost' "$1"; }
amqp_port() { printf '568%s' "$1"; }
dist_port() { printf '2568%s' "$1"; }
node_dir() { printf '%s/rc%s' "$DIR" "$1"; }
pid_file() { printf '%s/mnesia/%s.pid' "$(node_dir "$1")" "$(node_name "$1")"; }

check_node_arg() {
  case "${1:-}" in 1|2|3) ;; *) die "expected a node number 1, 2 or 3, got '${1:-}'" ;; esac
}

# The Debian wrappers switch to the rabbitmq user (whose home holds the shared
# cookie) only when called by root or by rabbitmq itself.
check_user() {
  local uid
  command -v rabbitmq-server >/dev/null || die "rabbitmq-server is not installed"
  uid=$(id -u)
  [ "$uid" -eq 0 ] || [ "$uid" -eq "$(id -u rabbitmq)" ] || die "run as root or as the rabbitmq user (the cluster's files and cookie are theirs)"
}

# One command at a time changes the cluster: two test files starting the same
# node at once would launch it twice.
lock() {
  check_user
  install -d -o rabbitmq -g rabbitmq -m 0750 "$DIR"
  [ -e "$DIR/.lock" ] || install -o rabbitmq -g rabbitmq -m 0660 /dev/null "$DIR/.lock"
  exec 9>>"$DIR/.lock"
  flock -w 300 9 || die "another rabbitmq-cluster.sh has held $DIR/.lock for 300s"
}

# rabbitmqctl on one of our nodes, bounded in time.
ctl() {
  local n=$1
  shift
  timeout "$CTL_TIMEOUT" rabbitmqctl -q -n "$(node_name "$n")" "$@"
}

# True when node N's runtime answers (the app may be stopped).
pings() { ctl "$1" ping >/dev/null 2>&1; }

# Running nodes as seen by the first of our nodes that answers, one per line.
running_nodes() {
  local n out
  for n in "${NODES[@]}"; do
    if out=$(ctl "$n" eval 'lists:sort(rabbit_nodes:all_running()).' 2>/dev/null); then
      # `['rc1@localhost','rc2@localhost']` -> one name per line
      printf '%s\n' "$out" | tr -d "[]' \n" | tr ',' '\n' | grep -v '^$' || true
      return 0
    fi
  done
  return 1
}

# True when the list of running nodes on stdin holds all three of ours.
all_three() { [ "$(grep -c '^rc[123]@localhost$')" -eq 3 ]; }

all_running() {
  local running
  running=$(running_nodes 2>/dev/null) || return 1
  printf '%s\n' "$running" | all_three
}

# Files of node N: its own config, an empty plugin list (no management plugin:
# it costs memory and nothing here uses it), data and log directories.
prepare_node() {
  local n=$1 d
  d=$(node_dir "$n")
  install -d -o rabbitmq -g rabbitmq -m 0750 "$DIR" "$d" "$d/mnesia" "$d/log"
  cat >"$d/rabbitmq.conf" <<CONF
# Written by scripts/rabbitmq-cluster.sh (fastify-event-socket): node $(node_name "$n").
listeners.tcp.local = 127.0.0.1:$(amqp_port "$n")
cluster_name = evsock-cluster
# A node cut off from the majority stops serving rather than diverging; see docs/rabbitmq.md.
cluster_partition_handling = pause_minority
# Modest memory: three nodes share a test machine. The quorum-queue WAL is kept
# in memory until it rolls over (512 MB by default), so it rolls over early.
vm_memory_high_watermark.absolute = 1GiB
raft.wal_max_size_bytes = 64000000
log.file.level = info
log.console = false
CONF
  printf '[].\n' >"$d/enabled_plugins"
  chown rabbitmq:rabbitmq "$d/rabbitmq.conf" "$d/enabled_plugins"
}

# Starts node N's runtime in the background (returns at once).
launch_node() {
  local n=$1 d out
  d=$(node_dir "$n")
  prepare_node "$n"
  out=$(mktemp)
  # RABBITMQ_-prefixed variables win over /etc/rabbitmq/rabbitmq-env.conf
  # (which names the machine's own node); `su` in the wrapper keeps them.
  # 9>&-: the node must not inherit the lock, or it would hold it for its life.
  env \
    RABBITMQ_NODENAME="$(node_name "$n")" \
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT="$(amqp_port "$n")" \
    RABBITMQ_DIST_PORT="$(dist_port "$n")" \
    RABBITMQ_MNESIA_BASE="$d/mnesia" \
    RABBITMQ_LOG_BASE="$d/log" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins" \
    RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf" \
    RABBITMQ_PID_FILE="$(pid_file "$n")" \
    rabbitmq-server -detached >"$out" 2>&1 9>&- \
    || die "rabbitmq-server -detached failed for $(node_name "$n"): $(cat "$out")"
  rm -f "$out"
}

# Waits (bounded) until node N's RabbitMQ application has started.
await_node() {
  local n=$1 deadline=$((SECONDS + START_TIMEOUT))
  # await_startup fails at once while the runtime is not up yet, so ping first.
  until pings "$n"; do
    [ "$SECONDS" -lt "$deadline" ] || die "$(node_name "$n") did not come up within ${START_TIMEOUT}s (logs: $(node_dir "$n")/log)"
    sleep 0.5
  done
  timeout "$START_TIMEOUT" rabbitmqctl -q -n "$(node_name "$n")" await_startup --timeout "$START_TIMEOUT" >/dev/null \
    || die "$(node_name "$n") did not finish starting within ${START_TIMEOUT}s (logs: $(node_dir "$n")/log)"
}

# Joins node N to rc1's cluster unless it already is a member.
join_node() {
  local n=$1 members
  members=$(ctl "$n" eval 'rabbit_nodes:all().') || die "cannot read the cluster membership of $(node_name "$n")"
  if printf '%s' "$members" | grep -q "rc1@localhost"; then return 0; fi
  log "joining $(node_name "$n") to rc1@localhost"
  ctl "$n" stop_app >/dev/null
  ctl "$n" join_cluster rc1@localhost >/dev/null || die "$(node_name "$n") could not join rc1@localhost"
  ctl "$n" start_app >/dev/null
  await_node "$n"
}

# Waits (bounded) until node N is among the cluster's running nodes.
await_in_cluster() {
  local n=$1 deadline=$((SECONDS + START_TIMEOUT))
  until running_nodes 2>/dev/null | grep -qx "$(node_name "$n")"; do
    [ "$SECONDS" -lt "$deadline" ] || die "$(node_name "$n") is not back in the running cluster after ${START_TIMEOUT}s"
    sleep 0.5
  done
}

stop_one() {
  local n=$1
  pings "$n" || return 0
  # With the pid file, `stop` returns once the runtime has exited, not just once asked to.
  timeout "$START_TIMEOUT" rabbitmqctl -q -n "$(node_name "$n")" stop "$(pid_file "$n")" >/dev/null \
    || die "could not stop $(node_name "$n")"
}

urls() {
  local n out=()
  for n in "${NODES[@]}"; do out+=("amqp://guest:guest@127.0.0.1:$(amqp_port "$n")"); done
  (IFS=,; printf '%s\n' "${out[*]}")
}

cmd_start() {
  lock
  if all_running; then
    urls
    return 0
  fi
  local n pids=()
  for n in "${NODES[@]}"; do
    pings "$n" || launch_node "$n"
  done
  # In parallel: a node that left a cluster waits at boot for its peers.
  for n in "${NODES[@]}"; do await_node "$n" & pids+=($!); done
  for n in "${!pids[@]}"; do wait "${pids[$n]}" || die "node rc$((n + 1)) failed to start"; done
  join_node 2
  join_node 3
  for n in "${NODES[@]}"; do await_in_cluster "$n"; done
  log "running: $(running_nodes | paste -sd' ')"
  urls
}

cmd_stop() {
  lock
  local n pids=()
  for n in "${NODES[@]}"; do stop_one "$n" & pids+=($!); done
  for n in "${!pids[@]}"; do wait "${pids[$n]}" || die "node rc$((n + 1)) failed to stop"; done
}

cmd_reset() {
  cmd_stop
  # Only ever our own directory: refuse anything that is not it.
  case "$DIR" in */evsock-cluster) ;; *) die "refusing to delete '$DIR' (not an evsock-cluster directory)" ;; esac
  rm -rf -- "$DIR"
}

cmd_stop_node() {
  check_node_arg "${1:-}"
  lock
  stop_one "$1"
}

cmd_start_node() {
  check_node_arg "${1:-}"
  lock
  pings "$1" || launch_node "$1"
  await_node "$1"
  await_in_cluster "$1"
}

cmd_status() {
  local running
  running=$(running_nodes) || { echo "no cluster node answers"; return 1; }
  printf '%s\n' "$running"
  printf '%s\n' "$running" | all_three
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  reset) cmd_reset ;;
  stop-node) cmd_stop_node "${2:-}" ;;
  start-node) cmd_start_node "${2:-}" ;;
  status) cmd_status ;;
  urls) urls ;;
  *) die "usage: $0 start|stop|reset|stop-node N|start-node N|status|urls" ;;
esac
