#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for testing `snakemake --profile profiles/slurm`.
#
#   bash scripts/slurm_cluster.sh start DIR   # install (Debian packages), configure, start daemons
#   bash scripts/slurm_cluster.sh stop DIR    # stop them
#
# Runs as root without systemd: munged, slurmctld and slurmd are started by hand. The node offers
# two fake GPUs (gres.conf: File=/dev/null, /dev/zero), so `--gpus=1` jobs are scheduled like on a
# GPU cluster and run on the CPU. No accounting database: job states come from squeue (MinJobAge
# keeps finished jobs visible) and every finished job is logged to DIR/jobcomp.log.
set -euo pipefail
action=${1:?usage: slurm_cluster.sh start|stop DIR}
dir=$(mkdir -p "${2:?usage: slurm_cluster.sh start|stop DIR}" && cd "$2" && pwd)

stop() {
    for daemon in slurmd slurmctld; do
        if [ -f "$dir/$daemon.pid" ]; then
            kill "$(cat "$dir/$daemon.pid")" 2>/dev/null || true
            rm -f "$dir/$daemon.pid"
        fi
    done
    pkill -x slurmstepd 2>/dev/null || true
}

if [ "$action" = stop ]; then
    stop
    exit 0
fi
[ "$action" = start ] || { echo "unknown action $action (start|stop)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "slurm_cluster.sh must run as root (it starts slurmctld/slurmd)" >&2; exit 2; }

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
    || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi

host=$(hostname -s)
mkdir -p "$dir/state" "$dir/spool" /etc/slurm
# Fake node size: jobs ask for up to 8 CPUs and 48+ GB; the scheduler only does the bookkeeping
# (config_overrides), memory is not a consumable resource (CR_Core).
cat > /etc/slurm/slurm.conf <<EOF
ClusterName=stepscope
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/jobcomp.log
GresTypes=gpu
MinJobAge=3600
ReturnToService=2
SchedulerType=sched/backfill
MpiDefault=none
NodeName=$host CPUs=16 RealMemory=512000 Gres=gpu:2 State=UNKNOWN
PartitionName=main Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
cat > /etc/slurm/gres.conf <<EOF
NodeName=$host Name=gpu File=/dev/null
NodeName=$host Name=gpu File=/dev/zero
EOF

stop
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
[ -s /etc/munge/munge.key ] || { dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; }
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
if ! pgrep -x munged >/dev/null; then
    su -s /bin/sh munge -c /usr/sbin/munged
fi
slurmctld
slurmd
for _ in $(seq 60); do
    if sinfo -h -o %T 2>/dev/null | grep -qx idle; then
        echo "slurm: node $host idle with $(sinfo -h -o %G) (logs in $dir)"
        exit 0
    fi
    sleep 1
done
echo "slurm did not come up; see $dir/slurmctld.log and $dir/slurmd.log" >&2
exit 1
