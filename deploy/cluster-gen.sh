#!/usr/bin/env bash
# deploy/cluster-gen.sh: writes a cluster file (docs/cluster-file.md) for a
# set of GPU hosts, one worker per GPU: the coordinator on the first host
# (it loads no weights and takes no GPU), then on the GPUs in host order
# the text encoders, the DiT stages pipeline by pipeline, and the VAE
# decoders. Used by deploy/slurm/sdc.sbatch; handy for mpirun and systemd
# layouts too. The file is checked with sdc-cluster-info before it is
# printed.
set -euo pipefail
PROG=cluster-gen.sh
BIN=${SDC_BIN:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/build/bin}

usage() {
    cat <<USAGE
usage: deploy/cluster-gen.sh --hosts H1,H2,.. --gpus-per-host G --stages S
                             --model DIR --redis URL [options] > cluster.json

Options:
  --hosts LIST          hosts in order; the coordinator runs on the first
  --gpus-per-host G     GPUs (workers) per host, 1..64
  --stages S            DiT stages per pipeline, 1..64
  --model DIR           model directory, the same path on every host
  --redis URL           redis://host:port[/db] (no password: that comes from
                        SDC_REDIS_PASSWORD[_FILE] on each node)
  --text-encoders N     text-encoder workers (default 1)
  --vaes N              VAE workers (default 1)
  --pipelines P         pipelines (default: as many as the remaining GPUs hold;
                        GPUs left over stay idle, with a warning)
  --backend NAME        cuda (default) or cpu
  --micro-batch N       samples per stage message (default 2)
  --prefix P            Redis key prefix (default sdc:)

Pipelines need hosts x G - text encoders - VAEs >= S GPUs. Stages of one
pipeline are consecutive GPUs, so a pipeline stays on one host when it
starts on a host boundary and S divides G (its activations then cross no
network link).
USAGE
}

die() { echo "$PROG: $*" >&2; exit 1; }
usage_error() { echo "$PROG: $* (see --help)" >&2; exit 2; }
posint() { # flag value max
    if ! [[ $2 =~ ^[1-9][0-9]{0,5}$ ]] || [ "$2" -gt "$3" ]; then
        usage_error "$1: '$2' is not an integer in 1..$3"
    fi
}

hosts="" gpus="" stages="" model="" redis="" te=1 vae=1 pipelines="" backend=cuda mb=2 prefix=sdc:
while [ $# -gt 0 ]; do
    case "$1" in
    -h | --help) usage; exit 0 ;;
    --hosts | --gpus-per-host | --stages | --model | --redis | --text-encoders | --vaes | \
        --pipelines | --backend | --micro-batch | --prefix)
        [ $# -ge 2 ] || usage_error "$1 needs a value"
        case "$1" in
        --hosts) hosts=$2 ;;
        --gpus-per-host) posint "$1" "$2" 64; gpus=$2 ;;
        --stages) posint "$1" "$2" 64; stages=$2 ;;
        --model) model=$2 ;;
        --redis) redis=$2 ;;
        --text-encoders) posint "$1" "$2" 64; te=$2 ;;
        --vaes) posint "$1" "$2" 64; vae=$2 ;;
        --pipelines) posint "$1" "$2" 4096; pipelines=$2 ;;
        --backend)
            [[ $2 =~ ^(cpu|cuda)$ ]] || usage_error "--backend: '$2' is not cpu or cuda"
            backend=$2 ;;
        --micro-batch) posint "$1" "$2" 256; mb=$2 ;;
        --prefix) prefix=$2 ;;
        esac
        shift 2 ;;
    *) usage_error "unknown argument '$1'" ;;
    esac
done
if [ -z "$hosts" ] || [ -z "$gpus" ] || [ -z "$stages" ] || [ -z "$model" ] || [ -z "$redis" ]; then
    usage_error "--hosts, --gpus-per-host, --stages, --model and --redis are required"
fi
case "$redis" in *@*) usage_error "--redis: no credentials in the URL (use SDC_REDIS_PASSWORD_FILE)" ;; esac
case "$model$prefix" in *'"'* | *\\*) usage_error "--model and --prefix may not hold quotes or backslashes" ;; esac
IFS=, read -r -a H <<<"$hosts"
[ ${#H[@]} -ge 1 ] || usage_error "--hosts: no host"
for h in "${H[@]}"; do
    [[ $h =~ ^[A-Za-z0-9._-]+$ ]] || usage_error "--hosts: bad host name '$h'"
done

total=$((${#H[@]} * gpus))
fit=$(((total - te - vae) / stages))
[ "$fit" -ge 1 ] ||
    die "$total GPUs cannot hold $te text encoder(s), $vae VAE(s) and a pipeline of $stages stages"
if [ -z "$pipelines" ]; then
    pipelines=$fit
elif [ "$pipelines" -gt "$fit" ]; then
    die "$pipelines pipelines of $stages stages need $((pipelines * stages + te + vae)) GPUs, the hosts have $total"
fi
idle=$((total - te - vae - pipelines * stages))
[ "$idle" -eq 0 ] || echo "$PROG: warning: $idle GPU(s) left idle" >&2

# Worker w (0-based, in node order after the coordinator) takes GPU w, on
# host w / gpus.
gpu=0
node() { # role [pipeline stage]
    local h=${H[$((gpu / gpus))]}
    gpu=$((gpu + 1))
    if [ $# -eq 1 ]; then
        printf '    {"role": "%s", "host": "%s"}' "$1" "$h"
    else
        printf '    {"role": "%s", "host": "%s", "pipeline": "%s", "stage": %d}' "$1" "$h" "$2" "$3"
    fi
}
{
    printf '{\n  "redis": "%s",\n  "prefix": "%s",\n  "model": "%s",\n' "$redis" "$prefix" "$model"
    printf '  "backend": "%s",\n  "micro_batch": %d,\n  "pipelines": [\n' "$backend" "$mb"
    for ((p = 0; p < pipelines; p++)); do
        [ "$p" -eq 0 ] || printf ',\n'
        printf '    {"name": "p%d", "stages": %d, "blocks": "even"}' "$p" "$stages"
    done
    printf '\n  ],\n  "nodes": [\n'
    printf '    {"role": "coordinator", "host": "%s"}' "${H[0]}"
    for ((i = 0; i < te; i++)); do printf ',\n'; node text-encoder; done
    for ((p = 0; p < pipelines; p++)); do
        for ((s = 0; s < stages; s++)); do printf ',\n'; node dit-stage "p$p" "$s"; done
    done
    for ((i = 0; i < vae; i++)); do printf ',\n'; node vae; done
    printf '\n  ]\n}\n'
} >"${TMPDIR:-/tmp}/cluster-gen.$$"
trap 'rm -f "${TMPDIR:-/tmp}/cluster-gen.$$"' EXIT
if [ -x "$BIN/sdc-cluster-info" ]; then
    "$BIN/sdc-cluster-info" "${TMPDIR:-/tmp}/cluster-gen.$$" >/dev/null ||
        die "the generated cluster file does not check (see above)"
fi
cat "${TMPDIR:-/tmp}/cluster-gen.$$"
