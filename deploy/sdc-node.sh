#!/usr/bin/env bash
# deploy/sdc-node.sh: runs one node of a cluster file under a launcher
# (mpirun, srun) that starts the same command everywhere: finds which node
# this process is, checks that the launcher put it on the host the cluster
# file names, gives it its GPU, and execs sdc-worker (or sdc-coordinator).
#
#   mpirun ... deploy/sdc-node.sh --cluster FILE [sdc-worker options]
#       node = OMPI_COMM_WORLD_RANK (or PMIX_RANK); sdc-worker bootstraps
#       over MPI (every node must be a rank: -np = number of nodes)
#   srun ... deploy/sdc-node.sh --cluster FILE --offset K [sdc-worker options]
#       node = SLURM_PROCID + K; peers found through Redis (fault tolerant:
#       a dead task does not end the others)
#   SDC_NODE=I deploy/sdc-node.sh --cluster FILE   an explicit node
#
# GPU: a launcher that binds one GPU per task (srun --gpus-per-task=1) sets
# CUDA_VISIBLE_DEVICES and it is kept. Otherwise, with backend cuda, a
# worker takes GPU g of its host, g = the number of non-coordinator nodes
# before it on the same host in the cluster file (the coordinator has no
# GPU). --dry-run prints the decision instead of running it.
set -euo pipefail
PROG=sdc-node.sh
BIN=${SDC_BIN:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/build/bin}

die() { echo "$PROG: $*" >&2; exit 1; }
usage_error() { echo "$PROG: $* (see the header of deploy/sdc-node.sh)" >&2; exit 2; }

cluster="" offset=0 dry=0
args=()
while [ $# -gt 0 ]; do
    case "$1" in
    --cluster | -c) [ $# -ge 2 ] || usage_error "$1 needs a value"; cluster=$2; shift 2 ;;
    --offset) [ $# -ge 2 ] || usage_error "$1 needs a value"
        [[ $2 =~ ^[0-9]{1,6}$ ]] || usage_error "--offset: '$2' is not a node index"
        offset=$2; shift 2 ;;
    --dry-run) dry=1; shift ;;
    --node | -n | --mpi) usage_error "$1: the node comes from the launcher (or SDC_NODE)" ;;
    *) args+=("$1"); shift ;;
    esac
done
[ -n "$cluster" ] || usage_error "--cluster FILE is required"
info=$("$BIN/sdc-cluster-info" "$cluster") || die "cluster file $cluster does not check (see above)"

mpi=0
if [ -n "${SDC_NODE:-}" ]; then
    node=$SDC_NODE
elif [ -n "${OMPI_COMM_WORLD_RANK:-}${PMIX_RANK:-}" ] && [ -z "${SLURM_PROCID:-}" ]; then
    node=${OMPI_COMM_WORLD_RANK:-$PMIX_RANK}
    mpi=1
elif [ -n "${SLURM_PROCID:-}" ]; then
    node=$((SLURM_PROCID + offset))
else
    usage_error "no node: run under mpirun or srun, or set SDC_NODE"
fi
[[ $node =~ ^[0-9]+$ ]] || die "node index '$node' is not a number"
nodes=$(awk '$1 == "nodes" { print $2 }' <<<"$info")
[ "$node" -lt "$nodes" ] || die "node $node: the cluster file has $nodes nodes (0..$((nodes - 1)))"

read -r _ _ role _ _ host < <(awk -v n="$node" '$1 == "node" && $2 == n' <<<"$info")
backend=$(awk '$1 == "backend" { print $2 }' <<<"$info")
me=${SDC_HOSTNAME:-$(hostname)}
if [ "$host" != localhost ] && [ "$host" != "$me" ] && [ "$host" != "${me%%.*}" ]; then
    die "node $node ($role) belongs on host '$host', but the launcher started it on '$me': the hostfile (or allocation) and the cluster file disagree"
fi

if [ "$role" != coordinator ] && [ "$backend" = cuda ] && [ -z "${CUDA_VISIBLE_DEVICES:-}" ]; then
    gpu=$(awk -v n="$node" -v h="$host" \
        '$1 == "node" && $2 < n && $6 == h && $3 != "coordinator" { g++ } END { print g + 0 }' <<<"$info")
    export CUDA_VISIBLE_DEVICES=$gpu
fi

cmd=("$BIN/sdc-worker" --cluster "$cluster")
[ "$mpi" = 1 ] || cmd+=(--node "$node")
cmd+=("${args[@]}")
if [ "$dry" = 1 ]; then
    echo "node=$node role=$role host=$host bootstrap=$([ "$mpi" = 1 ] && echo mpi || echo redis) CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-} ${cmd[*]}"
    exit 0
fi
exec "${cmd[@]}"
