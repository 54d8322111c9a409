#!/usr/bin/env bash
# Stand up a real one-node SLURM cluster on localhost (Debian's slurm-wlm and munge),
# for the integration test and the SLURM benchmark. Everything SLURM writes lives in
# one scratch folder; clients find the cluster through SLURM_CONF=<scratch>/slurm.conf.
#
#   tests/slurm/setup_local_slurm.sh SCRATCH [SLURMCTLD_PORT SLURMD_PORT]
#   export SLURM_CONF=SCRATCH/slurm.conf      # then sbatch, squeue, snakemake
#   tests/slurm/teardown_local_slurm.sh SCRATCH
#
# NODE_CPUS, NODE_MEMORY_MB and NODE_GPUS (environment) set what the node advertises
# (default: this machine's CPUs and 90 % of its memory, no GPUs). Advertising more than
# the machine has (config_overrides) lets a cluster profile's real requests - 8 CPUs,
# 32 GB, one GPU per job - be scheduled here unchanged; the GPUs are GRES
# backed by stand-in device files, so SLURM allocates them (and sets
# CUDA_VISIBLE_DEVICES) but jobs find no CUDA device and run on the CPU.
#
# Exit status: 0 when the node is idle and takes jobs; 3 when SLURM cannot be installed
# here (not root, or apt-get failed: callers skip); anything else is a real failure.
set -euo pipefail

SCRATCH=$(realpath -m "${1:?usage: setup_local_slurm.sh SCRATCH [SLURMCTLD_PORT SLURMD_PORT]}")
CTLD_PORT=${2:-6817}
SLURMD_PORT=${3:-6818}
CANNOT_INSTALL=3

say() { echo "setup_local_slurm: $*" >&2; }

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    if [[ $(id -u) -ne 0 ]]; then
        say "slurm-wlm/munge are not installed and installing them needs root"
        exit $CANNOT_INSTALL
    fi
    say "installing slurm-wlm and munge with apt-get"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge; } >&2; then
        say "apt-get could not install slurm-wlm and munge"
        exit $CANNOT_INSTALL
    fi
fi
if [[ $(id -u) -ne 0 ]]; then
    say "the daemons run as root in this minimal set-up; run as root"
    exit $CANNOT_INSTALL
fi

mkdir -p "$SCRATCH"/{state,spool,log}

# munge: one daemon per machine, shared with any other cluster on it.
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    if [[ ! -s /etc/munge/munge.key ]]; then
        install -d -o munge -g munge -m 700 /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
    fi
    install -d -o munge -g munge -m 755 /run/munge
    install -d -o munge -g munge -m 700 /var/lib/munge /var/log/munge
    runuser -u munge -- /usr/sbin/munged
    touch "$SCRATCH/started-munged"
    for _ in $(seq 50); do
        munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.1
    done
    munge -n </dev/null | unmunge >/dev/null || { say "munged does not answer"; exit 1; }
fi

HOST=$(hostname -s)
CPUS=${NODE_CPUS:-$(nproc)}
MEMORY_MB=${NODE_MEMORY_MB:-$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)}
GPUS=${NODE_GPUS:-0}
if ((GPUS > 0)); then
    GRES_LINES="GresTypes=gpu"
    NODE_GRES=" Gres=gpu:$GPUS"
    # SLURM drops file-less GPUs: give each a character device (/dev/null's numbers).
    for ((i = 0; i < GPUS; i++)); do
        [[ -c $SCRATCH/fake-gpu$i ]] || mknod "$SCRATCH/fake-gpu$i" c 1 3
    done
    echo "NodeName=$HOST Name=gpu File=$SCRATCH/fake-gpu[0-$((GPUS - 1))]" >"$SCRATCH/gres.conf"
else
    GRES_LINES=""
    NODE_GRES=""
    rm -f "$SCRATCH/gres.conf"
fi
cat >"$SCRATCH/slurm.conf" <<CONF
# Written by tests/slurm/setup_local_slurm.sh: a one-node cluster on localhost.
ClusterName=atoptest
SlurmctldHost=$HOST
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$SCRATCH/state
SlurmdSpoolDir=$SCRATCH/spool
SlurmctldPidFile=$SCRATCH/slurmctld.pid
SlurmdPidFile=$SCRATCH/slurmd.pid
SlurmctldLogFile=$SCRATCH/log/slurmctld.log
SlurmdLogFile=$SCRATCH/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# The node is what this file says, even where that is more than the machine has.
SlurmdParameters=config_overrides
$GRES_LINES
# Finished jobs stay visible to 'squeue --states=all' this long (the status poll needs them).
MinJobAge=600
NodeName=$HOST CPUs=$CPUS RealMemory=$MEMORY_MB$NODE_GRES State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$SCRATCH/slurm.conf
# Jobs' nested `srun` (the executor plugin's job step) drops SLURM_* variables,
# SLURM_CONF included, so the file must also be where clients look by default.
# Never replace a real cluster's file: only one this script linked.
SYSTEM_CONF=/etc/slurm/slurm.conf
if [[ -e $SYSTEM_CONF || -L $SYSTEM_CONF ]] && ! grep -q '^# Written by tests/slurm/setup_local_slurm.sh' "$SYSTEM_CONF" 2>/dev/null; then
    say "$SYSTEM_CONF belongs to another SLURM set-up; not touching it"
    exit 1
fi
mkdir -p /etc/slurm
ln -sfn "$SLURM_CONF" "$SYSTEM_CONF"

# -i: ignore state left by an earlier cluster in the same folder.
/usr/sbin/slurmctld -i -f "$SLURM_CONF"
/usr/sbin/slurmd -f "$SLURM_CONF"

for _ in $(seq 120); do
    state=$(sinfo -h -N -n "$HOST" -o %t 2>/dev/null || true)
    [[ $state == idle ]] && { say "node $HOST idle (SLURM_CONF=$SLURM_CONF)"; exit 0; }
    sleep 0.5
done
say "node $HOST did not become idle (state: '${state:-no answer}'); logs in $SCRATCH/log"
tail -n 20 "$SCRATCH"/log/*.log >&2 || true
exit 1
