#!/usr/bin/env bash
# A single-node SLURM cluster with accounting, kept in one directory (no systemd).
#
#   scripts/slurm.sh start [DIR]    create (first time) and start it; prints the SLURM_CONF line
#   scripts/slurm.sh stop [DIR]     cancel its jobs, stop the daemons it started (by pid file)
#   scripts/slurm.sh status [DIR]   say which daemons run; exit 0 when all of them do
#
# DIR (default: slurm-cluster) holds everything: configuration (DIR/etc), munge's socket,
# MariaDB's data, slurmctld's state, slurmd's spool, logs and pid files. Daemons: munged
# (as `munge`), mariadbd (as `mysql`, its own datadir and socket, 127.0.0.1 only), slurmdbd,
# slurmctld and slurmd (as root; SLURM runs jobs as the submitting user). Ports are free ones
# chosen when DIR is created and kept in its configuration files. Client commands (sinfo,
# srun, sbatch, squeue, sacct, scancel) find the cluster through SLURM_CONF=DIR/etc/slurm.conf.
# Needs root and Debian's slurm-wlm, slurmdbd, munge and mariadb-server. The munge and mysql
# users must reach DIR (choose it under /tmp or the project, not under a private home).
set -euo pipefail
# The daemons live in sbin, which is not on every PATH.
PATH=$PATH:/usr/sbin:/sbin

CLUSTER=deadunits
DB=slurm_acct_db
DB_USER=slurm

die() {
    echo "slurm.sh: $*" >&2
    exit 1
}

usage() {
    sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# Poll a command until it succeeds; $1 seconds at most, $2 what is awaited (for the error).
wait_for() {
    local timeout=$1 what=$2
    shift 2
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.3
    done
}

# The pid in a pid file when that process is alive and runs the expected program, else nothing.
live_pid() {
    local file=$1 program=$2 pid
    [[ -s "$file" ]] || return 1
    pid=$(tr -dc 0-9 <"$file")
    [[ -n "$pid" && -r "/proc/$pid/comm" ]] || return 1
    [[ "$(cat "/proc/$pid/comm")" == "$program" ]] || return 1
    echo "$pid"
}

[[ $# -ge 1 && $# -le 2 ]] || usage
command=$1
dir=${2:-slurm-cluster}
[[ "$command" != start ]] || mkdir -p "$dir"
dir=$(cd "$dir" 2>/dev/null && pwd || realpath -m "$dir")
etc=$dir/etc
export SLURM_CONF=$etc/slurm.conf

# name, program (as /proc/PID/comm shows it), pid file; in start order.
daemons=(
    "munged munged $dir/munge/munged.pid"
    "mariadbd mariadbd $dir/mysql/mariadbd.pid"
    "slurmdbd slurmdbd $dir/run/slurmdbd.pid"
    "slurmctld slurmctld $dir/run/slurmctld.pid"
    "slurmd slurmd $dir/run/slurmd.pid"
)

pid_of() {
    local entry name program file
    for entry in "${daemons[@]}"; do
        read -r name program file <<<"$entry"
        [[ "$name" == "$1" ]] && { live_pid "$file" "$program"; return; }
    done
    return 1
}

log_tail() { tail -n 20 "$1" >&2 2>/dev/null || true; }

# --- Configuration, written once when DIR is new ---------------------------------------

write_config() {
    local host slurmctld_port slurmd_port dbd_port db_port password node
    host=$(hostname -s)
    slurmctld_port=$(free_port)
    slurmd_port=$(free_port)
    dbd_port=$(free_port)
    db_port=$(free_port)
    password=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
    # What slurmd detects on this machine (CPUs, sockets, cores, memory), so the node is
    # never drained for claiming more than it has.
    node=$(slurmd -C | head -n 1 | sed 's/^NodeName=[^ ]* //')
    mkdir -p "$etc"
    cat >"$etc/slurm.conf.new" <<EOF
# Written by scripts/slurm.sh for the cluster in this directory.
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$slurmctld_port
SlurmdPort=$slurmd_port
# Listen on the address the host name resolves to (and NodeAddr), not on every address.
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/slurmd.%n
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$dbd_port
# Connections to slurmdbd take their munge socket from here, not from AuthInfo.
AccountingStoragePass=$dir/munge/munge.socket
JobCompType=jobcomp/none
NodeName=$host NodeAddr=127.0.0.1 $node State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    (
        umask 077
        cat >"$etc/slurmdbd.conf" <<EOF
# Written by scripts/slurm.sh for the cluster in this directory.
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
DbdHost=$host
DbdAddr=127.0.0.1
DbdPort=$dbd_port
CommunicationParameters=NoInAddrAny
SlurmUser=root
PidFile=$dir/run/slurmdbd.pid
LogFile=$dir/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$db_port
StorageUser=$DB_USER
StoragePass=$password
StorageLoc=$DB
EOF
    )
    cat >"$etc/my.cnf" <<EOF
# Written by scripts/slurm.sh: MariaDB for slurmdbd only, on 127.0.0.1.
[mysqld]
user=mysql
datadir=$dir/mysql/data
socket=$dir/mysql/mariadbd.sock
pid-file=$dir/mysql/mariadbd.pid
log-error=$dir/mysql/mariadbd.log
port=$db_port
bind-address=127.0.0.1
skip-name-resolve
innodb_buffer_pool_size=128M
innodb_lock_wait_timeout=900
[client]
socket=$dir/mysql/mariadbd.sock
port=$db_port
EOF
    # slurm.conf last: its presence marks a complete configuration.
    mv "$etc/slurm.conf.new" "$etc/slurm.conf"
}

db_password() { sed -n 's/^StoragePass=//p' "$etc/slurmdbd.conf"; }

# --- Starting each daemon ------------------------------------------------------------------

start_munged() {
    local socket=$dir/munge/munge.socket
    if ! pid_of munged >/dev/null; then
        rm -f "$socket" "$socket.lock"
        runuser -u munge -- munged --socket="$socket" --pid-file="$dir/munge/munged.pid" \
            --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed" ||
            { log_tail "$dir/munge/munged.log"; die "munged did not start"; }
    fi
    wait_for 30 munged bash -c "munge -n -S '$socket' | unmunge -S '$socket'" ||
        { log_tail "$dir/munge/munged.log"; die "munged does not answer on $socket"; }
}

start_mariadbd() {
    local data=$dir/mysql/data log=$dir/mysql/mariadbd.log
    if [[ ! -d "$data/mysql" ]]; then
        mariadb-install-db --defaults-file="$etc/my.cnf" --auth-root-authentication-method=socket \
            --skip-test-db >"$dir/mysql/install.log" 2>&1 ||
            { cat "$dir/mysql/install.log" >&2; die "mariadb-install-db failed"; }
    fi
    if ! pid_of mariadbd >/dev/null; then
        setsid mariadbd --defaults-file="$etc/my.cnf" </dev/null >>"$log" 2>&1 &
    fi
    wait_for 60 mariadbd mariadb-admin --defaults-file="$etc/my.cnf" -u root ping ||
        { log_tail "$log"; die "MariaDB did not start (log: $log)"; }
    mariadb --defaults-file="$etc/my.cnf" -u root <<EOF ||
CREATE DATABASE IF NOT EXISTS $DB;
CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$(db_password)';
GRANT ALL ON $DB.* TO '$DB_USER'@'127.0.0.1';
EOF
        die "could not create the database $DB and its user"
}

start_slurmdbd() {
    pid_of slurmdbd >/dev/null || slurmdbd ||
        { log_tail "$dir/log/slurmdbd.log"; die "slurmdbd did not start"; }
    wait_for 60 slurmdbd sacctmgr -n list cluster ||
        { log_tail "$dir/log/slurmdbd.log"; die "slurmdbd does not answer (log: $dir/log/slurmdbd.log)"; }
    if [[ -z "$(sacctmgr -n -P list cluster "$CLUSTER" format=cluster)" ]]; then
        sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "could not register cluster $CLUSTER"
    fi
}

start_slurmctld() {
    pid_of slurmctld >/dev/null || slurmctld ||
        { log_tail "$dir/log/slurmctld.log"; die "slurmctld did not start"; }
    wait_for 60 slurmctld bash -c 'scontrol ping | grep -q UP' ||
        { log_tail "$dir/log/slurmctld.log"; die "slurmctld does not answer (log: $dir/log/slurmctld.log)"; }
}

start_slurmd() {
    local host
    host=$(hostname -s)
    pid_of slurmd >/dev/null || slurmd ||
        { log_tail "$dir/log/slurmd.log"; die "slurmd did not start"; }
    # The node is usable once slurmctld has it idle (or busy with jobs).
    if ! wait_for 60 slurmd bash -c "sinfo -h -n '$host' -o %t | grep -Eq '^(idle|mix|alloc|comp)'"; then
        log_tail "$dir/log/slurmd.log"
        die "node $host is not up: $(sinfo -h -n "$host" -o '%t %E')"
    fi
}

start() {
    local begin
    begin=$(now)
    [[ "$(id -u)" == 0 ]] || die "needs root (slurmd runs jobs as their users; munged and MariaDB drop to their own)"
    for program in munged munge mariadbd mariadb-install-db slurmdbd slurmctld slurmd srun sacctmgr; do
        command -v "$program" >/dev/null 2>&1 ||
            die "$program not found; on Debian: apt-get install slurm-wlm slurmdbd munge mariadb-server"
    done
    id munge >/dev/null 2>&1 && id mysql >/dev/null 2>&1 || die "the munge and mysql users are missing"
    chmod 755 "$dir"
    mkdir -p "$dir/run" "$dir/log" "$dir/state" "$dir/spool" "$dir/munge" "$dir/mysql"
    chown munge: "$dir/munge"
    chmod 755 "$dir/munge"
    chown mysql: "$dir/mysql"
    runuser -u munge -- test -w "$dir/munge" ||
        die "the munge user cannot reach $dir (a parent directory is private: use a directory under /tmp)"
    [[ -f "$etc/slurm.conf" ]] || write_config

    start_munged
    start_mariadbd
    start_slurmdbd
    start_slurmctld
    start_slurmd
    timeout 60 srun -N 1 -t 1 hostname >/dev/null ||
        die "srun hostname failed (logs: $dir/log)"
    echo "slurm.sh: cluster '$CLUSTER' up, srun works $(since "$begin") s after start" >&2
    echo "export SLURM_CONF=$SLURM_CONF"
}

# --- Stopping --------------------------------------------------------------------------

stop_pid() {
    local name=$1 pid=$2 deadline
    kill -TERM "$pid" 2>/dev/null || return 0
    deadline=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "slurm.sh: $name ($pid) ignored SIGTERM for 30 s; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
}

stop() {
    local i name program file pid jobs
    if pid_of slurmctld >/dev/null; then
        # Jobs left running would keep their slurmstepd processes after slurmd stops.
        jobs=$(squeue -h -o %A 2>/dev/null || true)
        if [[ -n "$jobs" ]]; then
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            wait_for 60 jobs bash -c '[[ -z "$(squeue -h -o %A)" ]]' || true
        fi
    fi
    for ((i = ${#daemons[@]} - 1; i >= 0; i--)); do
        read -r name program file <<<"${daemons[$i]}"
        if pid=$(live_pid "$file" "$program"); then
            stop_pid "$name" "$pid"
        fi
    done
}

status() {
    local entry name program file pid all=0
    for entry in "${daemons[@]}"; do
        read -r name program file <<<"$entry"
        if pid=$(live_pid "$file" "$program"); then
            printf '%-10s running (pid %s)\n' "$name" "$pid"
        else
            printf '%-10s stopped\n' "$name"
            all=1
        fi
    done
    if ((all == 0)); then
        sinfo -h -o 'node %N: %t, %c CPUs, partition %P' 2>/dev/null || true
        echo "export SLURM_CONF=$SLURM_CONF"
    fi
    return "$all"
}

case $command in
start) start ;;
stop) stop ;;
status) status ;;
*) usage ;;
esac
