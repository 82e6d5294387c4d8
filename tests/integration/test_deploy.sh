#!/usr/bin/env bash
# test_deploy.sh: the deployment files. Shell scripts parse (bash -n) and
# pass shellcheck; systemd units pass `systemd-analyze verify` with no
# warning; deploy/cluster-gen.sh writes cluster files that sdc-cluster-info
# accepts, with one worker per GPU in host order, and refuses impossible
# layouts; deploy/sdc-node.sh maps launcher ranks to nodes and GPUs and
# refuses a rank started on the wrong host; the mpirun example's hostfile
# has one slot per node of its cluster file on each host.
# Prints "PASS name" / "FAIL name" per case (protocol of tests/run.sh).
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=$(cd "${SDC_BIN:-$ROOT/build/bin}" && pwd)
export SDC_BIN=$BIN
T=$(mktemp -d "${TMPDIR:-/tmp}/sdc-deploy-XXXXXX")
trap 'rm -rf "$T"' EXIT
. "$ROOT/tests/lib/expect.sh"

SCRIPTS=("$ROOT"/deploy/*.sh "$ROOT"/deploy/slurm/*.sbatch "$ROOT"/fuzz/run.sh)

bad=""
for s in "${SCRIPTS[@]}"; do bash -n "$s" 2>>"$T/bashn" || bad="$bad $(basename "$s")"; done
[ -z "$bad" ] && pass scripts_parse || fail scripts_parse "$bad: $(head -c 300 "$T/bashn")"

if command -v shellcheck >/dev/null; then
    if shellcheck -x -S warning "${SCRIPTS[@]}" >"$T/sc" 2>&1; then pass shellcheck; else
        fail shellcheck "$(head -c 600 "$T/sc")"
    fi
else
    echo "note: shellcheck not installed (make deps): not run"
fi

# systemd units: binaries pointed at this build (sdc-gateway, not built
# here, at /bin/true) and the service user at root, which exists.
if command -v systemd-analyze >/dev/null; then
    mkdir -p "$T/units"
    for u in "$ROOT"/deploy/systemd/*.service; do
        sed -e "s|/opt/sdc/bin/sdc-gateway|/bin/true|; s|/opt/sdc/bin/|$BIN/|" \
            -e 's/^User=sdc$/User=root/; s/^Group=sdc$/Group=root/' "$u" >"$T/units/$(basename "$u")"
    done
    cp "$T/units/sdc-worker@.service" "$T/units/sdc-worker@3.service"
    (cd "$T/units" && systemd-analyze verify ./*.service) >"$T/verify" 2>&1
    rc=$?
    if [ "$rc" = 0 ] && [ ! -s "$T/verify" ]; then pass systemd_units_verify; else
        fail systemd_units_verify "exit $rc: $(head -c 600 "$T/verify")"
    fi
    grep -q '^KillSignal=SIGTERM' "$ROOT/deploy/systemd/sdc-worker@.service" &&
        grep -q '^Restart=on-failure' "$ROOT/deploy/systemd/sdc-coordinator.service" &&
        grep -q '^EnvironmentFile=/etc/sdc/sdc.env' "$ROOT/deploy/systemd/sdc-gateway.service" &&
        pass systemd_units_policy || fail systemd_units_policy "KillSignal/Restart/EnvironmentFile missing"
else
    echo "note: systemd-analyze not installed: units not verified"
fi

# ---- cluster-gen.sh -----------------------------------------------------------

GEN="$ROOT/deploy/cluster-gen.sh"
expect gen_two_hosts 0 "" -- "$GEN" --hosts gpu-a,gpu-b --gpus-per-host 4 --stages 3 \
    --model /models/m --redis redis://gpu-a:6379
cp "$T/out" "$T/c2.json"
"$BIN/sdc-cluster-info" "$T/c2.json" >"$T/c2.info" 2>&1
roles=$(awk '$1 == "node" { printf "%s@%s ", $3, $6 }' "$T/c2.info")
want="coordinator@gpu-a text-encoder@gpu-a dit-stage@gpu-a dit-stage@gpu-a dit-stage@gpu-a "
want+="dit-stage@gpu-b dit-stage@gpu-b dit-stage@gpu-b vae@gpu-b "
[ "$roles" = "$want" ] && pass gen_layout || fail gen_layout "$roles"
grep -q '^backend cuda$' "$T/c2.info" && grep -q '^pipelines 2$' "$T/c2.info" &&
    pass gen_pipelines || fail gen_pipelines "$(head -c 300 "$T/c2.info")"
expect gen_idle_warning 0 "2 GPU\(s\) left idle" -- "$GEN" --hosts a --gpus-per-host 8 --stages 4 \
    --model m --redis redis://a:1 --text-encoders 1 --vaes 1 --pipelines 1
expect gen_too_small 1 "cannot hold" -- "$GEN" --hosts a --gpus-per-host 3 --stages 2 \
    --model m --redis redis://a:1
expect gen_too_many 1 "need 11 GPUs, the hosts have 8" -- "$GEN" --hosts a,b --gpus-per-host 4 \
    --stages 3 --model m --redis redis://a:1 --pipelines 3
expect gen_bad_number 2 "--stages: 'x'" -- "$GEN" --hosts a --gpus-per-host 4 --stages x \
    --model m --redis redis://a:1
expect gen_password 2 "no credentials" -- "$GEN" --hosts a --gpus-per-host 4 --stages 1 \
    --model m --redis redis://u:pw@a:1
expect gen_missing 2 "are required" -- "$GEN" --hosts a
expect gen_bad_host 2 "bad host name" -- "$GEN" --hosts 'a b' --gpus-per-host 2 --stages 1 \
    --model m --redis redis://a:1

# ---- sdc-node.sh ----------------------------------------------------------------

NODE="$ROOT/deploy/sdc-node.sh"
# dry NAME WANT "ENV..." [ARGS...]: the dry run's decision under a launcher's
# environment.
dry() {
    local name=$1 want=$2 envs=$3
    shift 3
    local got
    # shellcheck disable=SC2086 # ENV is a list of NAME=VALUE words
    got=$(env -u CUDA_VISIBLE_DEVICES -u OMPI_COMM_WORLD_RANK -u PMIX_RANK -u SLURM_PROCID \
        -u SDC_NODE $envs "$NODE" --cluster "$T/c2.json" --dry-run "$@" --threads 4 2>&1 |
        sed 's/ \/.*sdc-worker/ sdc-worker/')
    [ "$got" = "$want" ] && pass "$name" || fail "$name" "got '$got', want '$want'"
}
C="--cluster $T/c2.json"
dry node_mpi_coordinator "node=0 role=coordinator host=gpu-a bootstrap=mpi CUDA_VISIBLE_DEVICES= sdc-worker $C --threads 4" \
    "OMPI_COMM_WORLD_RANK=0 SDC_HOSTNAME=gpu-a"
dry node_mpi_first_gpu "node=1 role=text-encoder host=gpu-a bootstrap=mpi CUDA_VISIBLE_DEVICES=0 sdc-worker $C --threads 4" \
    "OMPI_COMM_WORLD_RANK=1 SDC_HOSTNAME=gpu-a"
dry node_mpi_last_gpu "node=4 role=dit-stage host=gpu-a bootstrap=mpi CUDA_VISIBLE_DEVICES=3 sdc-worker $C --threads 4" \
    "OMPI_COMM_WORLD_RANK=4 SDC_HOSTNAME=gpu-a.example.org"
dry node_mpi_second_host "node=8 role=vae host=gpu-b bootstrap=mpi CUDA_VISIBLE_DEVICES=3 sdc-worker $C --threads 4" \
    "PMIX_RANK=8 SDC_HOSTNAME=gpu-b"
dry node_slurm_offset "node=5 role=dit-stage host=gpu-b bootstrap=redis CUDA_VISIBLE_DEVICES=6 sdc-worker $C --node 5 --threads 4" \
    "SLURM_PROCID=4 CUDA_VISIBLE_DEVICES=6 SDC_HOSTNAME=gpu-b" --offset 1
expect node_wrong_host 1 "belongs on host 'gpu-b'.*disagree" -- \
    env OMPI_COMM_WORLD_RANK=6 SDC_HOSTNAME=gpu-a "$NODE" --cluster "$T/c2.json" --dry-run
expect node_out_of_range 1 "node 9: the cluster file has 9 nodes" -- \
    env SDC_NODE=9 SDC_HOSTNAME=gpu-a "$NODE" --cluster "$T/c2.json" --dry-run
expect node_no_launcher 2 "no node" -- \
    env -u OMPI_COMM_WORLD_RANK -u PMIX_RANK -u SLURM_PROCID -u SDC_NODE "$NODE" --cluster "$T/c2.json"
expect node_refuses_node_flag 2 "comes from the launcher" -- \
    env SDC_NODE=1 "$NODE" --cluster "$T/c2.json" --node 3
expect node_bad_cluster 1 "does not check" -- env SDC_NODE=1 "$NODE" --cluster "$T/nope.json"

# ---- the mpirun example ------------------------------------------------------------

"$BIN/sdc-cluster-info" "$ROOT/deploy/mpi/cluster-2x4gpu.json" >"$T/mpi.info" 2>&1 ||
    fail mpi_example_cluster "$(head -c 300 "$T/mpi.info")"
per_host=$(awk '$1 == "node" { n[$6]++ } END { for (h in n) print h " slots=" n[h] }' "$T/mpi.info" | sort)
in_file=$(grep -v '^#' "$ROOT/deploy/mpi/hostfile.example" | grep . | sort)
[ "$per_host" = "$in_file" ] && pass mpi_hostfile_matches ||
    fail mpi_hostfile_matches "cluster file: $per_host; hostfile: $in_file"
exit 0
