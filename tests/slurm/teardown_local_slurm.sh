#!/usr/bin/env bash
# Stop the cluster setup_local_slurm.sh started in SCRATCH: cancel its jobs, stop
# slurmd and slurmctld (by their pid files), and munged only if that script started it.
#   tests/slurm/teardown_local_slurm.sh SCRATCH
set -uo pipefail

SCRATCH=$(realpath -m "${1:?usage: teardown_local_slurm.sh SCRATCH}")
export SLURM_CONF=$SCRATCH/slurm.conf

stop() {  # pid file: TERM, wait up to 10 s, then KILL
    local pid
    [[ -s $1 ]] || return 0
    pid=$(cat "$1")
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
}

if [[ -f $SLURM_CONF ]]; then
    jobs=$(squeue -h -o %i 2>/dev/null || true)
    [[ -n $jobs ]] && scancel $jobs 2>/dev/null
fi
stop "$SCRATCH/slurmd.pid"
stop "$SCRATCH/slurmctld.pid"
if [[ $(readlink /etc/slurm/slurm.conf) == "$SLURM_CONF" ]]; then
    rm -f /etc/slurm/slurm.conf
fi
if [[ -f $SCRATCH/started-munged ]]; then
    stop /run/munge/munged.pid
    rm -f "$SCRATCH/started-munged"
fi
exit 0
