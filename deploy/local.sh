#!/usr/bin/env bash
# deploy/local.sh: an sdc cluster on this host. `up` writes a cluster file (or
# takes yours), starts Redis if none answers at the cluster's address, starts
# the coordinator and the workers (under mpirun, or as plain processes) and
# waits until every node has registered in Redis; `down` stops what `up`
# started and nothing else; `status` shows the processes and the cluster.
#
# Everything lives in one run directory (${SDC_RUN_DIR:-/tmp/sdc-local}):
#   cluster.json   the cluster file in use       state    what `up` started with
#   pids/NAME.pid  "PID STARTTIME" per process   logs/    one log per node, redis, mpirun
#   redis/         Redis' append-only files (kept by `down`: queued jobs survive)
# A pid file names a process only while /proc agrees on its start time, so a
# reused pid is never signalled.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF="$ROOT/deploy/$(basename "${BASH_SOURCE[0]}")"
RUN=${SDC_RUN_DIR:-/tmp/sdc-local}
BIN=${SDC_BIN:-$ROOT/build/bin}
PROG=local.sh

usage() {
    cat <<EOF
usage: deploy/local.sh up --model DIR --stages N [--pipelines P] [options]
       deploy/local.sh up --cluster FILE [options]
       deploy/local.sh down [--timeout S]
       deploy/local.sh status

Runs an sdc cluster on this host.

up       Writes a cluster file for this host (1 coordinator, 1 text-encoder,
         P pipelines x N dit-stages, 1 vae) into the run directory, or uses
         --cluster FILE; starts redis-server at the cluster's Redis address
         (127.0.0.1:6399 by default) unless one already answers there (append-only
         file, fsync every second, data in the run directory); starts the
         coordinator and the workers, one process per node, under
         'mpirun --allow-run-as-root --oversubscribe -np K' (rank i = node i), or
         as plain background processes with --no-mpi; then waits until every
         node has registered in Redis. A node that exits or does not register
         in time fails the start: the tail of its log is printed and everything
         started is stopped again. Running 'up' on a cluster that is up with
         the same settings does nothing.
down     Stops the processes 'up' started (SIGTERM, then SIGKILL after
         --timeout S, default 30: nodes finish the work they hold first),
         Redis last and only if 'up' started it.
         Logs and Redis' data stay in the run directory.
status   Shows the processes 'up' started and, from Redis, the nodes (role,
         pipeline/stage, heartbeat age), queue depth and jobs in flight.
         Exit status 0: all running; 3: nothing running; 1: otherwise.

Options of up:
  --model DIR          model directory (diffusers layout)
  --stages N           DiT stages per pipeline, 1..64
  --pipelines P        pipelines (replicas), 1..64 (default 1)
  --cluster FILE       use this cluster file instead (its nodes must run here)
  --no-mpi             start the nodes as plain processes (they bootstrap
                       through Redis) instead of under mpirun
  --backend NAME       cpu (default) or cuda, for a written cluster file
  --redis-port PORT    port of the Redis of a written cluster file (default 6399)
  --threads N          CPU threads per node (default: the host's cores shared
                       among the nodes, at least 1)
  --worker-args ARGS   extra arguments for every sdc-worker (split on spaces)
  --timeout S          how long to wait for the nodes to register (default 300)

Environment: SDC_RUN_DIR (run directory, default /tmp/sdc-local), SDC_BIN
(binaries, default build/bin of this checkout), SDC_REDIS_PASSWORD or
SDC_REDIS_PASSWORD_FILE (the password of Redis; a Redis that 'up' starts
then requires it).
EOF
}

die() { echo "$PROG: $*" >&2; exit 1; }
usage_error() { echo "$PROG: $* (see --help)" >&2; exit 2; }
say() { echo "$PROG: $*"; }

now_ms() { date +%s%3N; }

# --- processes ---------------------------------------------------------------

# Start time of a process in clock ticks since boot (field 22 of
# /proc/PID/stat; the command name before it may hold spaces).
# A zombie (exited, not yet reaped) counts as gone.
starttime() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    set -- $stat
    [ "$1" != Z ] || return 1
    echo "${20}"
}

record_pid() { # name pid
    local st
    st=$(starttime "$2") || return 1
    echo "$2 $st" >"$RUN/pids/$1.pid"
}

# The pid recorded under name, if that process still runs; else fails.
live_pid() {
    local f="$RUN/pids/$1.pid" pid st now
    [ -f "$f" ] || return 1
    read -r pid st <"$f" || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    now=$(starttime "$pid") || return 1
    [ "$now" = "$st" ] || return 1
    echo "$pid"
}

pid_names() { # every recorded name, nodes and mpirun before redis
    local f
    for f in "$RUN"/pids/*.pid; do
        [ -e "$f" ] || continue
        f=$(basename "$f" .pid)
        [ "$f" = redis ] || echo "$f"
    done
    [ -e "$RUN/pids/redis.pid" ] && echo redis
    return 0
}

any_alive() { # names...
    local n
    for n in "$@"; do live_pid "$n" >/dev/null && return 0; done
    return 1
}

# SIGTERM, wait up to $2 s, SIGKILL what is left. Only recorded, live pids.
stop_names() { # "names" timeout
    local timeout=$2 n pid deadline
    # shellcheck disable=SC2206 # names are [a-z0-9-]: split on white space
    local names=($1)
    [ ${#names[@]} -gt 0 ] || return 0
    for n in "${names[@]}"; do
        pid=$(live_pid "$n") && kill -TERM "$pid" 2>/dev/null || true
    done
    deadline=$(($(date +%s) + timeout))
    while any_alive "${names[@]}" && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.1; done
    for n in "${names[@]}"; do
        if pid=$(live_pid "$n"); then
            echo "$PROG: $n (pid $pid) ignored SIGTERM for ${timeout} s: SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    while any_alive "${names[@]}"; do sleep 0.05; done
    for n in "${names[@]}"; do rm -f "$RUN/pids/$n.pid"; done
}

# --- state -------------------------------------------------------------------

state_get() { # key -> value from $RUN/state
    [ -f "$RUN/state" ] || return 1
    local line
    line=$(grep -m1 "^$1=" "$RUN/state") || return 1
    echo "${line#*=}"
}

# The cluster file's description, from sdc-cluster-info (one line per fact).
info_get() { # key
    local line
    line=$(grep -m1 "^$1 " "$RUN/cluster.info") || return 1
    echo "${line#* }"
}

node_line() { # index -> "role pipeline stage host"
    local line
    line=$(grep -m1 "^node $1 " "$RUN/cluster.info") || return 1
    line=${line#node $1 }
    echo "$line"
}

need_bin() {
    local b
    for b in "$@"; do
        [ -x "$BIN/$b" ] || die "$BIN/$b not found: build first ('make'), or set SDC_BIN"
    done
}

# --- Redis -------------------------------------------------------------------

redis_answers() { # url prefix
    "$BIN/sdc-status" --redis "$1" --prefix "$2" --nodes-tsv >/dev/null 2>&1
}

# host:port of a loopback redis:// URL, for a Redis this script may start.
local_redis_port() { # url -> port, fails for other hosts
    local rest=${1#redis://} host port
    [ "$rest" != "$1" ] || return 1
    rest=${rest#*@}
    rest=${rest%%/*}
    host=${rest%:*}
    port=${rest##*:}
    [ "$host" != "$rest" ] || port=6379
    case $host in 127.0.0.1 | localhost | "[::1]") ;; *) return 1 ;; esac
    [[ $port =~ ^[0-9]+$ ]] || return 1
    echo "$port"
}

redis_password() {
    if [ -n "${SDC_REDIS_PASSWORD_FILE:-}" ]; then
        head -n1 "$SDC_REDIS_PASSWORD_FILE"
    else
        printf '%s' "${SDC_REDIS_PASSWORD:-}"
    fi
}

start_redis() { # url prefix
    local url=$1 prefix=$2 port pid i pw
    if redis_answers "$url" "$prefix"; then
        if pid=$(live_pid redis); then
            say "using the redis-server an earlier start left running (pid $pid)"
        else
            say "using the Redis already answering at $url (not started here: 'down' leaves it)"
        fi
        return 0
    fi
    port=$(local_redis_port "$url") ||
        die "no Redis answers at $url, and it is not on this host's loopback: start it first"
    command -v redis-server >/dev/null || die "redis-server not found (make deps installs it)"
    mkdir -p "$RUN/redis"
    # A config file, not argv: a password on a command line is visible to all.
    (
        umask 077
        {
            echo "port $port"
            echo "bind 127.0.0.1"
            echo "dir $RUN/redis"
            echo "appendonly yes"
            echo "appendfsync everysec"
            echo 'save ""'
            echo "daemonize no"
            pw=$(redis_password)
            if [ -n "$pw" ]; then echo "requirepass $pw"; fi
        } >"$RUN/redis.conf"
    )
    setsid redis-server "$RUN/redis.conf" </dev/null >>"$RUN/logs/redis.log" 2>&1 9>&- &
    pid=$!
    record_pid redis "$pid" || true
    for ((i = 0; i < 100; i++)); do
        redis_answers "$url" "$prefix" && { say "started redis-server on 127.0.0.1:$port (pid $pid)"; return 0; }
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "$PROG: redis-server did not come up on 127.0.0.1:$port; its log ends with:" >&2
    tail -n 15 "$RUN/logs/redis.log" | sed 's/^/    /' >&2
    stop_names redis 5
    exit 1
}

# --- up ----------------------------------------------------------------------

write_cluster() { # model stages pipelines backend port -> $RUN/cluster.json
    local model=$1 stages=$2 pipes=$3 backend=$4 port=$5 p s sep
    {
        echo "{"
        echo "  \"redis\": \"redis://127.0.0.1:$port\","
        printf '  "model": "%s",\n' "$(json_escape "$model")"
        echo "  \"backend\": \"$backend\","
        echo "  \"pipelines\": ["
        for ((p = 0; p < pipes; p++)); do
            sep=","; ((p == pipes - 1)) && sep=""
            echo "    {\"name\": \"p$p\", \"stages\": $stages, \"blocks\": \"even\"}$sep"
        done
        echo "  ],"
        echo "  \"nodes\": ["
        echo "    {\"role\": \"coordinator\"},"
        echo "    {\"role\": \"text-encoder\"},"
        for ((p = 0; p < pipes; p++)); do
            for ((s = 0; s < stages; s++)); do
                echo "    {\"role\": \"dit-stage\", \"pipeline\": \"p$p\", \"stage\": $s},"
            done
        done
        echo "    {\"role\": \"vae\"}"
        echo "  ]"
        echo "}"
    } >"$RUN/cluster.json.new"
}

json_escape() {
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    printf '%s' "$s"
}

# Fails (listing what is missing) until every node of the cluster file has a
# registration newer than the start of `up`. A coordinator counts as
# registered when it registered a node or took the leader lease.
nodes_missing() { # since_ms leader_before
    local since=$1 leader_before=$2 tsv i line role p s key
    tsv=$("$BIN/sdc-status" --redis "$URL" --prefix "$PREFIX" --nodes-tsv 2>/dev/null) || {
        echo "redis"
        return 0
    }
    declare -A have=()
    local leader=""
    while IFS=$'\t' read -r id role p s hb _; do
        if [ "$id" = leader ]; then leader=$role; continue; fi
        [ -n "$hb" ] && [ "$hb" -ge "$since" ] || continue
        [ "$role" = dit-stage ] && key="$role/$p/$s" || key=$role
        have[$key]=$((${have[$key]:-0} + 1))
    done <<<"$tsv"
    if [ -n "$leader" ] && [ "$leader" != "$leader_before" ]; then
        have[coordinator]=$((${have[coordinator]:-0} + 1))
    fi
    local n_nodes missing=()
    n_nodes=$(info_get nodes)
    for ((i = 0; i < n_nodes; i++)); do
        read -r role p s _ <<<"$(node_line "$i")"
        [ "$role" = dit-stage ] && key="$role/$p/$s" || key=$role
        if [ "${have[$key]:-0}" -gt 0 ]; then
            have[$key]=$((have[$key] - 1))
        else
            missing+=("$i")
        fi
    done
    [ ${#missing[@]} -eq 0 ] && return 1
    echo "${missing[*]}"
}

describe_node() { # index
    local role p s host
    read -r role p s host <<<"$(node_line "$1")"
    if [ "$role" = dit-stage ]; then
        echo "node $1 ($role, pipeline $(pipeline_name "$p"), stage $s)"
    else
        echo "node $1 ($role)"
    fi
}

pipeline_name() {
    local line
    line=$(grep -m1 "^pipeline $1 " "$RUN/cluster.info") && { read -r _ _ name _ <<<"$line"; echo "$name"; } || echo "$1"
}

log_tail() { # file
    if [ -s "$1" ]; then
        tail -n 20 "$1" | sed 's/^/    /' >&2
    else
        echo "    ($1 is empty)" >&2
    fi
}

# Start failed: say why, stop what was started, exit 1.
fail_up() { # message failing-node-index-or-empty
    echo "$PROG: $1" >&2
    if [ -n "$2" ]; then
        echo "$PROG: $(describe_node "$2"): last lines of $RUN/logs/node-$2.log:" >&2
        log_tail "$RUN/logs/node-$2.log"
    fi
    if [ "$(state_get mode)" = mpi ] && [ -s "$RUN/logs/mpirun.log" ]; then
        echo "$PROG: last lines of $RUN/logs/mpirun.log:" >&2
        log_tail "$RUN/logs/mpirun.log"
    fi
    do_down 10 >&2
    exit 1
}

wait_registered() { # since_ms leader_before timeout_s
    local since=$1 leader_before=$2 timeout=$3 deadline missing i n_nodes last=""
    deadline=$(($(date +%s) + timeout))
    n_nodes=$(info_get nodes)
    while :; do
        missing=$(nodes_missing "$since" "$leader_before") || return 0
        [ "$missing" = redis ] && fail_up "Redis at $URL stopped answering" ""
        # A node that exited will never register.
        for ((i = 0; i < n_nodes; i++)); do
            if [ -f "$RUN/pids/node-$i.pid" ] && ! live_pid "node-$i" >/dev/null; then
                fail_up "$(describe_node "$i") exited during start-up" "$i"
            fi
        done
        if [ "$(state_get mode)" = mpi ] && ! live_pid mpirun >/dev/null; then
            fail_up "mpirun exited during start-up" "${missing%% *}"
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            fail_up "$(echo "$missing" | wc -w) of $n_nodes nodes did not register within ${timeout} s: $(for i in $missing; do describe_node "$i"; done | paste -sd, -)" "${missing%% *}"
        fi
        if [ "$missing" != "$last" ]; then
            say "waiting for $(echo "$missing" | wc -w) of $n_nodes nodes to register"
            last=$missing
        fi
        sleep 0.2
    done
}

# Internal: the command every node runs, under mpirun or not. It records
# its pid, sends its output to its log and becomes the node's binary.
# Under mpirun the node is the rank: the binary reads it and bootstraps
# through MPI; given an index, the node bootstraps through Redis.
do_rank() { # [index]
    local i=${1:-${OMPI_COMM_WORLD_RANK:-${PMIX_RANK:-}}}
    [[ $i =~ ^[0-9]+$ ]] || die "rank: no node index (not under mpirun?)"
    local role extra args=(--cluster "$RUN/cluster.json")
    [ $# -eq 0 ] || args+=(--node "$i")
    read -r role _ <<<"$(node_line "$i")" || die "rank: node $i is not in the cluster file"
    record_pid "node-$i" $$
    exec >>"$RUN/logs/node-$i.log" 2>&1 </dev/null
    echo "--- $(date -u +%Y-%m-%dT%H:%M:%SZ) node $i ($role), pid $$"
    if [ "$role" = coordinator ]; then
        exec "$BIN/sdc-coordinator" "${args[@]}"
    fi
    extra=$(state_get worker_args || true)
    # shellcheck disable=SC2086 # split on spaces, as documented
    exec "$BIN/sdc-worker" "${args[@]}" --threads "$(state_get threads)" $extra
}

up_settings() { # cluster-file -> the parts of `up` that must match for "already up"
    echo "mode=$MODE"
    echo "worker_args=$WORKER_ARGS"
    echo "threads=$THREADS"
    cat "$1"
}

do_up() {
    local model="" stages="" pipes=1 cluster="" backend=cpu port=6399 timeout=300
    MODE=mpi WORKER_ARGS="" THREADS=""
    while [ $# -gt 0 ]; do
        case $1 in
        --model) model=${2:-}; shift ;;
        --stages) stages=${2:-}; shift ;;
        --pipelines) pipes=${2:-}; shift ;;
        --cluster) cluster=${2:-}; shift ;;
        --no-mpi) MODE=plain ;;
        --backend) backend=${2:-}; shift ;;
        --redis-port) port=${2:-}; shift ;;
        --threads) THREADS=${2:-}; shift ;;
        --worker-args) WORKER_ARGS=${2:-}; shift ;;
        --timeout) timeout=${2:-}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage_error "up: unknown option '$1'" ;;
        esac
        shift
    done
    [[ $pipes =~ ^[0-9]+$ ]] && ((pipes >= 1 && pipes <= 64)) || usage_error "--pipelines: '$pipes' is not an integer in 1..64"
    [[ $timeout =~ ^[0-9]+$ ]] && ((timeout >= 1)) || usage_error "--timeout: '$timeout' is not a positive integer"
    [ -z "$THREADS" ] || { [[ $THREADS =~ ^[0-9]+$ ]] && ((THREADS >= 1)); } || usage_error "--threads: '$THREADS' is not a positive integer"
    [[ $port =~ ^[0-9]+$ ]] && ((port >= 1 && port <= 65535)) || usage_error "--redis-port: '$port' is not a port"
    case $backend in cpu | cuda) ;; *) usage_error "--backend: '$backend' is not cpu or cuda" ;; esac
    if [ -n "$cluster" ]; then
        [ -z "$model$stages" ] || usage_error "up: --cluster replaces --model and --stages"
    else
        [ -n "$model" ] && [ -n "$stages" ] || usage_error "up: --model and --stages are required (or --cluster FILE)"
        [[ $stages =~ ^[0-9]+$ ]] && ((stages >= 1 && stages <= 64)) || usage_error "--stages: '$stages' is not an integer in 1..64"
    fi
    need_bin sdc-status sdc-cluster-info sdc-coordinator sdc-worker
    [ "$MODE" = plain ] || command -v mpirun >/dev/null || die "mpirun not found (make deps installs Open MPI; or use --no-mpi)"

    mkdir -p "$RUN/pids" "$RUN/logs"
    exec 9>"$RUN/lock"
    flock -w 30 9 || die "another local.sh holds $RUN/lock"

    if [ -n "$cluster" ]; then
        [ -f "$cluster" ] || die "--cluster $cluster: no such file"
        "$BIN/sdc-cluster-info" "$cluster" >/dev/null || die "--cluster $cluster is not valid (see above)"
        cp "$cluster" "$RUN/cluster.json.new"
    else
        [ -f "$model/model_index.json" ] || die "--model $model: no model_index.json there (a diffusers model directory)"
        write_cluster "$(cd "$model" && pwd)" "$stages" "$pipes" "$backend" "$port"
    fi
    "$BIN/sdc-cluster-info" "$RUN/cluster.json.new" >"$RUN/cluster.info.new" ||
        die "the cluster file is not valid (see above)"
    local n_nodes
    n_nodes=$(grep -m1 '^nodes ' "$RUN/cluster.info.new" | cut -d' ' -f2)
    if [ -z "$THREADS" ]; then
        THREADS=$(($(nproc) / (n_nodes > 1 ? n_nodes - 1 : 1)))
        ((THREADS >= 1)) || THREADS=1
    fi

    # Already up with these settings: nothing to do. Up with others, or
    # partly up: refuse, or clean up the remains.
    local names
    names=$(pid_names | grep -v '^redis$' || true)
    if [ -n "$names" ] && any_alive $names; then
        local all=1 n
        for n in $names; do live_pid "$n" >/dev/null || all=0; done
        if [ $all = 1 ] && [ -f "$RUN/state" ] && [ "$(sed -n '/^settings:$/,$p' "$RUN/state" | tail -n +2)" = "$(up_settings "$RUN/cluster.json.new")" ]; then
            rm -f "$RUN/cluster.json.new" "$RUN/cluster.info.new"
            say "already up (run directory $RUN); 'deploy/local.sh status' shows it"
            exit 0
        fi
        if [ $all = 1 ]; then
            rm -f "$RUN/cluster.json.new" "$RUN/cluster.info.new"
            die "a cluster with other settings is up in $RUN: run 'deploy/local.sh down' first"
        fi
        say "some processes of the last start are gone: stopping the rest and starting again"
        stop_names "$names" 10
    fi
    # Records of processes that are gone would confuse status and down; a
    # Redis an earlier start left running is reused if the address is the
    # same, else stopped.
    local f new_url
    new_url=$(grep -m1 '^redis ' "$RUN/cluster.info.new" | cut -d' ' -f2-)
    if live_pid redis >/dev/null && [ "$(state_get url || true)" != "$new_url" ]; then
        stop_names redis 10
    fi
    for f in "$RUN"/pids/*.pid; do
        [ -e "$f" ] || continue
        [ "$(basename "$f")" = redis.pid ] && live_pid redis >/dev/null && continue
        rm -f "$f"
    done
    mv "$RUN/cluster.json.new" "$RUN/cluster.json"
    mv "$RUN/cluster.info.new" "$RUN/cluster.info"

    URL=$(info_get redis)
    PREFIX=$(info_get prefix)
    {
        echo "mode=$MODE"
        echo "bin=$BIN"
        echo "url=$URL"
        echo "prefix=$PREFIX"
        echo "worker_args=$WORKER_ARGS"
        echo "threads=$THREADS"
        echo "started=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "settings:"
        up_settings "$RUN/cluster.json"
    } >"$RUN/state"

    start_redis "$URL" "$PREFIX"
    local leader_before since
    leader_before=$("$BIN/sdc-status" --redis "$URL" --prefix "$PREFIX" --nodes-tsv | awk -F'\t' '$1 == "leader" { print $2 }' || true)
    since=$(now_ms)
    export SDC_RUN_DIR=$RUN SDC_BIN=$BIN
    # One host: UCX's network transports on the loopback only (the
    # environment may override it); shared-memory transports are unaffected.
    export UCX_NET_DEVICES=${UCX_NET_DEVICES:-lo}
    if [ "$MODE" = mpi ]; then
        # One host: MPI over shared memory, its out-of-band channel on the
        # loopback (the environment may override either).
        export OMPI_MCA_btl=${OMPI_MCA_btl:-self,vader}
        export OMPI_MCA_btl_vader_single_copy_mechanism=${OMPI_MCA_btl_vader_single_copy_mechanism:-none}
        export OMPI_MCA_oob_tcp_if_include=${OMPI_MCA_oob_tcp_if_include:-lo}
        setsid mpirun --allow-run-as-root --oversubscribe -np "$n_nodes" \
            bash "$SELF" rank </dev/null >>"$RUN/logs/mpirun.log" 2>&1 9>&- &
        record_pid mpirun $! || true
        say "started $n_nodes nodes under mpirun (pid $!)"
    else
        local i
        for ((i = 0; i < n_nodes; i++)); do
            # shellcheck disable=SC2046 # one -u per variable
            env $(env | awk -F= '/^(OMPI_|PMIX_|PMI_)/ { printf "-u %s ", $1 }') \
                setsid bash "$SELF" rank "$i" </dev/null >/dev/null 2>&1 9>&- &
        done
        # The nodes record their own pids; wait for every record.
        local deadline=$(($(date +%s) + 10))
        for ((i = 0; i < n_nodes; i++)); do
            while [ ! -s "$RUN/pids/node-$i.pid" ] && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.05; done
        done
        say "started $n_nodes nodes as plain processes"
    fi
    wait_registered "$since" "$leader_before" "$timeout"
    local pipes_n stages_desc
    pipes_n=$(info_get pipelines)
    stages_desc=$(grep '^pipeline ' "$RUN/cluster.info" | awk '{ print $4 }' | sort -u | paste -sd/ -)
    say "up: $n_nodes nodes registered ($pipes_n pipeline(s) x $stages_desc dit-stage(s), $([ "$MODE" = mpi ] && echo mpirun || echo no mpi)), redis $URL, run directory $RUN"
    say "submit jobs with: $BIN/sdc-submit --redis $URL --prompts FILE --out DIR --wait"
}

# --- down, status -----------------------------------------------------------------

do_down() { # timeout
    local timeout=${1:-30} names
    names=$(pid_names | grep -v '^redis$' || true)
    if [ -z "$names" ] && [ ! -e "$RUN/pids/redis.pid" ]; then
        say "nothing to stop in $RUN"
        return 0
    fi
    # mpirun forwards SIGTERM to its ranks; the ranks are signalled directly
    # too, in case mpirun is already gone.
    [ -z "$names" ] || stop_names "$names" "$timeout"
    [ ! -e "$RUN/pids/redis.pid" ] || stop_names redis "$timeout"
    say "stopped (logs and Redis data stay in $RUN)"
}

do_status() {
    [ -f "$RUN/state" ] || { say "nothing started from $RUN"; exit 3; }
    local names n pid alive=0 dead=0 url prefix
    names=$(pid_names)
    url=$(state_get url)
    prefix=$(state_get prefix)
    BIN=$(state_get bin)
    echo "run directory: $RUN ($(state_get mode), started $(state_get started))"
    if [ -z "$names" ]; then
        echo "processes: none (stopped)"
    else
        echo "processes:"
        for n in $names; do
            if pid=$(live_pid "$n"); then
                printf '  %-10s pid %-8s running\n' "$n" "$pid"
                alive=$((alive + 1))
            else
                printf '  %-10s %-12s exited (log: %s)\n' "$n" "" "$RUN/logs/$n.log"
                dead=$((dead + 1))
            fi
        done
    fi
    echo
    local rc=0
    if redis_answers "$url" "$prefix"; then
        "$BIN/sdc-status" --redis "$url" --prefix "$prefix" || rc=1
    else
        echo "redis: no answer at $url"
        rc=1
    fi
    if [ $alive -eq 0 ]; then exit 3; fi
    [ $dead -eq 0 ] || exit 1
    exit $rc
}

# --- main --------------------------------------------------------------------

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
up) do_up "$@" ;;
down)
    timeout=30
    while [ $# -gt 0 ]; do
        case $1 in
        --timeout) timeout=${2:-}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage_error "down: unknown option '$1'" ;;
        esac
        shift
    done
    [[ $timeout =~ ^[0-9]+$ ]] || usage_error "--timeout: '$timeout' is not a number of seconds"
    [ -d "$RUN" ] || { say "nothing to stop in $RUN"; exit 0; }
    mkdir -p "$RUN/pids"
    exec 9>"$RUN/lock"
    flock -w 30 9 || die "another local.sh holds $RUN/lock"
    do_down "$timeout"
    ;;
status)
    [ $# -eq 0 ] || { [ "$1" = --help ] || [ "$1" = -h ] && { usage; exit 0; }; usage_error "status takes no arguments"; }
    do_status
    ;;
rank) do_rank "$@" ;;
-h | --help | help) usage ;;
"") usage_error "expected a command: up, down or status" ;;
*) usage_error "unknown command '$cmd'" ;;
esac
