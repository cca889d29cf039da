#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for the test suite:
#
#   tests/slurm/cluster.sh start    install what is missing (apt-get), configure, start, wait until the node takes jobs
#   tests/slurm/cluster.sh stop     end the daemons `start` started (by pid) and wait for them to exit
#   tests/slurm/cluster.sh status   what runs
#
# For a root shell on a Debian bookworm machine without systemd or cgroups (a
# container): Slurm 22.05 (slurmctld, slurmd), munge for authentication, and
# slurmdbd on MariaDB, because submitit reads job states with sacct and sacct
# needs the accounting daemon (without it submitit cannot tell that a job died).
# `start` is idempotent and two at once do not race (a lock); a daemon that was
# already running when `start` came is used, never stopped by `stop`.
set -euo pipefail

STATE=/var/lib/resnet-cifar-slurm       # pids of the daemons started here, the database password
LOGS=/var/log/slurm
CLUSTER=resnetcifar                     # short: sacctmgr's default output truncates long names
PARTITION=debug
DB_NAME=slurm_acct_db
DB_USER=slurm
NODE=$(hostname -s)
SLURM_CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)   # start order; stop goes backwards
UP_TIMEOUT_S=60

say() { echo "cluster.sh: $*"; }
die() { echo "cluster.sh: error: $*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root (it installs packages and starts system daemons)"

# -- which daemons run ---------------------------------------------------------

pid_alive() { [[ -n ${1:-} && -d /proc/$1 ]] && kill -0 "$1" 2>/dev/null; }

started_pid() {  # the pid recorded by our own `start`, if that process still runs
    local file=$STATE/$1.pid pid
    [[ -f $file ]] || return 1
    pid=$(<"$file")
    pid_alive "$pid" && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$1" ]] && echo "$pid"  # not a reused pid
}

running_pid() {  # any running instance: ours, or one that was there before (by its own pid file or name)
    started_pid "$1" && return 0
    local pid
    pid=$(pgrep -x "$1" | head -n1) || return 1
    echo "$pid"
}

# -- installing ------------------------------------------------------------------

install_missing() {
    local missing=()
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null || missing+=(slurm-wlm)
    command -v munged >/dev/null || missing+=(munge)
    command -v slurmdbd >/dev/null || missing+=(slurmdbd)
    command -v mariadbd >/dev/null || missing+=(mariadb-server)
    ((${#missing[@]})) || return 0
    say "installing ${missing[*]} with apt-get"
    local started=$SECONDS
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    say "installed in $((SECONDS - started)) s"
}

# -- configuration ---------------------------------------------------------------

OURS="# Written by tests/slurm/cluster.sh"
FOREIGN_CONFIG=3   # exit status when this machine has a Slurm configuration of its own

refuse_foreign_config() {  # never overwrite the configuration of a real cluster
    local file
    for file in "$SLURM_CONF" "$DBD_CONF"; do
        if [[ -s $file ]] && ! head -n1 "$file" | grep -q "^$OURS"; then
            echo "cluster.sh: $file was not written by this script: this machine has a Slurm set-up of its own," \
                "which the test cluster would replace; run the slurm tests on a machine without one" >&2
            exit $FOREIGN_CONFIG
        fi
    done
}

write_slurm_conf() {
    local cpus mem_mb
    cpus=$(nproc)
    mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)  # a bit under the machine's
    mkdir -p /etc/slurm "$LOGS" /var/spool/slurmctld /var/spool/slurmd
    cat >"$SLURM_CONF.new" <<EOF
$OURS for $NODE: one node, no cgroups, no systemd.
ClusterName=$CLUSTER
SlurmctldHost=$NODE
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=10
SlurmUser=root
SlurmdUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
MailProg=/bin/true
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$((mem_mb / cpus / 2))
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobCompType=jobcomp/none
ReturnToService=2
EnforcePartLimits=ALL   # a request larger than the node is refused by sbatch, not left pending for ever
SchedulerParameters=sched_interval=5,bf_interval=5
KillWait=5
NodeName=$NODE CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
# FORCE:4: the jobs of tests running at the same time share the cores instead of queueing
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
    if cmp -s "$SLURM_CONF.new" "$SLURM_CONF"; then
        rm "$SLURM_CONF.new"
    else
        mv "$SLURM_CONF.new" "$SLURM_CONF"
        if running_pid slurmctld >/dev/null; then scontrol reconfigure; say "slurm.conf changed: reconfigured"; fi
    fi
}

db_password() {
    mkdir -p "$STATE"
    [[ -f $STATE/db_password ]] || (umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$STATE/db_password")
    cat "$STATE/db_password"
}

write_slurmdbd_conf() {
    local password=$1
    (umask 077 && cat >"$DBD_CONF" <<EOF
$OURS
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=/run/slurmdbd.pid
LogFile=$LOGS/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=$DB_USER
StoragePass=$password
StorageLoc=$DB_NAME
EOF
    )
}

# -- starting ------------------------------------------------------------------

wait_for() {  # wait_for WHAT SECONDS COMMAND...: poll until the command succeeds
    local what=$1 limit=$2
    shift 2
    local until=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < until)) || die "$what did not come up within $limit s (logs under $LOGS and $STATE)"
        sleep 0.2
    done
}

record() {  # record NAME PID: this `start` started it, so `stop` ends it
    echo "$2" >"$STATE/$1.pid"
}

start_forking() {  # start_forking NAME PIDFILE COMMAND...: a daemon that forks and writes its pid file
    local name=$1 pidfile=$2
    shift 2
    if running_pid "$name" >/dev/null; then return 0; fi
    rm -f "$pidfile"
    "$@" 9>&-   # the daemon must not inherit (and so hold) the lock of this script
    wait_for "$name's pid file" 30 test -s "$pidfile"
    record "$name" "$(<"$pidfile")"
    say "started $name (pid $(<"$pidfile"))"
}

start_munged() {
    [[ -f /etc/munge/munge.key ]] || mungekey --create --keyfile=/etc/munge/munge.key
    mkdir -p /run/munge && chown munge:munge /run/munge
    start_forking munged /run/munge/munged.pid runuser -u munge -- munged --force
}

start_mariadbd() {
    if ! running_pid mariadbd >/dev/null; then
        mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
        [[ -d /var/lib/mysql/mysql ]] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >"$STATE/mariadb-install.log" 2>&1
        setsid mariadbd --user=mysql --bind-address=127.0.0.1 --socket=/run/mysqld/mysqld.sock \
            --pid-file=/run/mysqld/mysqld.pid </dev/null >>"$STATE/mariadbd.log" 2>&1 9>&- &
        record mariadbd $!
        say "started mariadbd (pid $!)"
    fi
    wait_for "MariaDB" 60 mariadb -e 'select 1'
    mariadb -e "CREATE DATABASE IF NOT EXISTS $DB_NAME;
                CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$(db_password)';
                ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$(db_password)';
                GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';"
}

node_up() {  # taking jobs: idle, or running some already (a second `start` while tests run)
    [[ $(sinfo -h -n "$NODE" -o %T 2>/dev/null) =~ ^(idle|mixed|allocated|completing)$ ]]
}

start() {
    refuse_foreign_config
    install_missing
    mkdir -p "$STATE" "$LOGS"
    write_slurm_conf
    write_slurmdbd_conf "$(db_password)"
    start_munged
    start_mariadbd
    start_forking slurmdbd /run/slurmdbd.pid slurmdbd
    wait_for "slurmdbd" 60 sacctmgr -n list cluster
    sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
    start_forking slurmctld /run/slurmctld.pid slurmctld
    start_forking slurmd /run/slurmd.pid slurmd
    wait_for "node $NODE taking jobs (sinfo)" "$UP_TIMEOUT_S" node_up
    say "node $NODE $(sinfo -h -n "$NODE" -o %T): partition $PARTITION, $(nproc) CPUs, Slurm $(sinfo -V | awk '{print $2}')"
}

# -- stopping and status -------------------------------------------------------

stop() {
    local i name pid until
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
        name=${DAEMONS[i]}
        if pid=$(started_pid "$name"); then
            kill -TERM "$pid" 2>/dev/null || true
            until=$((SECONDS + 30))
            while pid_alive "$pid" && ((SECONDS < until)); do sleep 0.1; done
            if pid_alive "$pid"; then
                kill -KILL "$pid" 2>/dev/null || true
                say "$name (pid $pid) did not end on SIGTERM within 30 s: killed"
            else
                say "stopped $name (pid $pid)"
            fi
        fi
        rm -f "$STATE/$name.pid"
    done
}

status() {
    local name pid
    for name in "${DAEMONS[@]}"; do
        if pid=$(started_pid "$name"); then
            echo "$name: running (pid $pid, started by cluster.sh)"
        elif pid=$(running_pid "$name"); then
            echo "$name: running (pid $pid, not started by cluster.sh)"
        else
            echo "$name: not running"
        fi
    done
    if command -v sinfo >/dev/null && running_pid slurmctld >/dev/null; then
        sinfo -N -o "node %N: %T, %c CPUs, %m MB, partition %P" | tail -n +2
    fi
}

mkdir -p "$STATE" /run/lock
exec 9>/run/lock/resnet-cifar-slurm.lock
flock 9   # one start or stop at a time (two pytest-xdist workers may both ask)
case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) die "usage: $0 start|stop|status" ;;
esac
