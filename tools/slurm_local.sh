#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, from Debian's packages, for trying the Snakemake SLURM
# profile (workflow/profiles/slurm) without a real cluster.
#
#   tools/slurm_local.sh install   # apt-get update + install slurmctld slurmd slurm-client munge (root)
#   tools/slurm_local.sh start     # munged + slurmctld + slurmd, state in $IPFACEDIFF_SLURM_DIR; prints the env
#   tools/slurm_local.sh env       # `export SLURM_CONF=...` for sbatch/squeue/sacct/snakemake
#   tools/slurm_local.sh status    # sinfo
#   tools/slurm_local.sh stop      # stops what `start` started (by pid file), keeps the state dir
#
# One partition `local` with this machine's CPUs and memory, no GPUs (rules that ask for `gpu` stay
# pending here). No accounting database (slurmdbd + MariaDB): the `sacct` that `start` puts first on
# PATH ($DIR/bin/sacct) answers the one query the Snakemake SLURM executor makes (job id|state of
# the jobs named by its run id) from slurmctld, which keeps finished jobs for MinJobAge = 10 min.
# A real cluster's sacct reads the accounting database instead.
# Needs root (slurmd runs jobs as their submitter). Exit 3 when SLURM cannot start here.
set -euo pipefail
DIR=${IPFACEDIFF_SLURM_DIR:-/tmp/ipfacediff-slurm}
CONF=$DIR/slurm.conf
HOST=$(hostname -s)

die() { echo "slurm_local: $*" >&2; exit 3; }

install_packages() {
    [ "$(id -u)" = 0 ] || die "install needs root (apt-get)"
    [ "${IPFACEDIFF_APT_UPDATED:-0}" = 1 ] || apt-get update -qq  # .ci/run updates once for all its installs
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
}

write_conf() {
    local cpus mem
    cpus=$(nproc)
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
    mkdir -p "$DIR/ctld" "$DIR/slurmd" "$DIR/munge"
    cat > "$CONF" <<CONF
ClusterName=ipfacediff
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=${IPFACEDIFF_SLURMCTLD_PORT:-6917}
SlurmdPort=${IPFACEDIFF_SLURMD_PORT:-6918}
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket.2
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/slurmd
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=600
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
}

start() {
    for b in munged slurmctld slurmd sinfo sbatch; do
        command -v "$b" >/dev/null || [ -x "/usr/sbin/$b" ] || die "$b not installed (run: tools/slurm_local.sh install)"
    done
    [ "$(id -u)" = 0 ] || die "start needs root (slurmd runs jobs as their users)"
    write_conf
    export SLURM_CONF=$CONF
    write_sacct
    if ! [ -S "$DIR/munge/munge.socket.2" ] || ! pgrep -F "$DIR/munged.pid" >/dev/null 2>&1; then
        [ -f /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; chmod 400 /etc/munge/munge.key; }
        /usr/sbin/munged --force --socket="$DIR/munge/munge.socket.2" --pid-file="$DIR/munged.pid" \
            --log-file="$DIR/munged.log" --seed-file="$DIR/munge/munge.seed" || die "munged failed (see $DIR/munged.log)"
    fi
    pgrep -F "$DIR/slurmctld.pid" >/dev/null 2>&1 || /usr/sbin/slurmctld -f "$CONF" || die "slurmctld failed (see $DIR/slurmctld.log)"
    pgrep -F "$DIR/slurmd.pid" >/dev/null 2>&1 || /usr/sbin/slurmd -f "$CONF" || die "slurmd failed (see $DIR/slurmd.log)"
    for _ in $(seq 60); do
        if sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
            print_env
            return 0
        fi
        sleep 1
    done
    die "the node did not come up within 60 s: $(sinfo -h -o '%t %E' 2>&1 | head -1) (see $DIR/slurmd.log)"
}

write_sacct() {
    mkdir -p "$DIR/bin"
    cat > "$DIR/bin/sacct" <<'SACCT'
#!/usr/bin/env bash
# sacct for a cluster without accounting storage: `--name N` -> "jobid|STATE" lines from slurmctld
name=""
while [ $# -gt 0 ]; do
    case "$1" in --name) name=$2; shift 2 ;; --name=*) name=${1#--name=}; shift ;; *) shift ;; esac
done
exec squeue --noheader --states=all ${name:+--name="$name"} --format='%i|%T'
SACCT
    chmod +x "$DIR/bin/sacct"
}

print_env() { echo "export SLURM_CONF=$CONF PATH=$DIR/bin:\$PATH"; }

stop() {
    for d in slurmd slurmctld munged; do
        if [ -f "$DIR/$d.pid" ]; then
            pid=$(cat "$DIR/$d.pid")
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
            rm -f "$DIR/$d.pid"
        fi
    done
}

case "${1:-}" in
    install) install_packages ;;
    start) start ;;
    env) print_env ;;
    status) SLURM_CONF=$CONF sinfo ;;
    stop) stop ;;
    *) echo "usage: $0 install|start|env|status|stop" >&2; exit 2 ;;
esac
