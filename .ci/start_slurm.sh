#!/usr/bin/env bash
# Start a real single-node SLURM cluster on localhost for tests and CI, without systemd:
#   munged -> [mariadbd -> slurmdbd] -> slurmctld -> slurmd -N localhost
# Idempotent: safe to run again while it is up, and after a reboot (fresh /run).
# Exits 0 once `sinfo` shows node `localhost` idle; otherwise prints the daemons' logs
# and exits non-zero.  Stop it with .ci/stop_slurm.sh.
#
# Needs root and Debian's packages:
#     apt-get install -y slurm-wlm munge                 # ~10-15 s
#     apt-get install -y slurmdbd mariadb-server         # optional, ~40 s: accounting
# SLURM_CI_INSTALL=1 makes this script install what is missing.
#
# Accounting (slurmdbd + MariaDB) makes `sacct` work.  submitit polls job states with
# sacct only; without it every state reads UNKNOWN and a job that dies without writing
# its result (cancelled, DependencyNeverSatisfied, killed, node failure) makes
# job.result()/job.wait() block forever.  Successful jobs and jobs whose Python function
# raises still work without accounting (submitit reads the result pickle).
#
# Knobs (environment):
#   SLURM_CI_ACCOUNTING  auto (default: on if slurmdbd and mariadbd are installed) | 1 | 0
#   SLURM_CI_CPUS        CPUs of the node (default: nproc).  More than nproc is allowed
#                        (SlurmdParameters=config_overrides) to run more jobs at once.
#   SLURM_CI_MEM_MB      RealMemory in MB (default: 90% of what slurmd -C sees, at most
#                        16384).  Jobs must ask --mem <= this.
#   SLURM_CI_DEFMEM_MB   DefMemPerCPU (default 512): memory a job gets if it asks none.
#   SLURM_CI_TIMEOUT     seconds to wait for each daemon / the idle node (default 60).
#   SLURM_CI_FORCE=1     overwrite an /etc/slurm/slurm.conf this script did not write.
#   SLURM_CI_CLEAN=1     start slurmctld with -c (forget saved jobs and node state).
set -euo pipefail

MARK="# Managed by .ci/start_slurm.sh (single-node localhost CI cluster)"
CONF=/etc/slurm/slurm.conf
DBDCONF=/etc/slurm/slurmdbd.conf
CLUSTER=localci
LOGDIR=/var/log/slurm
RUNDIR=/run/slurm
STATEDIR=/var/spool/slurmctld-ci
SPOOLDIR=/var/spool/slurmd-ci
CTLD_PID=$RUNDIR/slurmctld.pid
SLURMD_PID=$RUNDIR/slurmd.pid
DBD_PID=$RUNDIR/slurmdbd.pid
DB_PID=/run/mysqld/mysqld.pid
DB_OURS=$RUNDIR/mariadb.started-by-ci
DB_NAME=slurm_acct_db
DB_USER=slurm
DB_PASS=slurmci
TIMEOUT=${SLURM_CI_TIMEOUT:-60}
T0=$(date +%s.%N)

log() { echo "[start_slurm] $*" >&2; }

dump_logs() {
    log "---- diagnostics ----"
    for f in /var/log/munge/munged.log "$LOGDIR/mariadb.log" "$LOGDIR/slurmdbd.log" \
             "$LOGDIR/slurmctld.log" "$LOGDIR/slurmd.log" \
             "$LOGDIR/slurmctld.stdout" "$LOGDIR/slurmd.stdout" "$LOGDIR/slurmdbd.stdout"; do
        if [ -s "$f" ]; then echo "==== tail -n 40 $f" >&2; tail -n 40 "$f" >&2 || true; fi
    done
    echo "==== processes" >&2
    ps -eo pid,user,args | grep -E '[m]unged|[m]ariadbd|[s]lurmdbd|[s]lurmctld|[s]lurmd' >&2 || true
    echo "==== sinfo -R; sinfo -N -l" >&2
    timeout 5 sinfo -R >&2 2>&1 || true
    timeout 5 sinfo -N -l >&2 2>&1 || true
}
die() { log "ERROR: $*"; dump_logs; exit 1; }
pid_alive() {  # pidfile: true if it names a live process whose name matches the file's
    # (after a reboot a stale pid file may point at an unrelated process)
    local p want; p=$(cat "$1" 2>/dev/null) || return 1
    [ -n "$p" ] && kill -0 "$p" 2>/dev/null || return 1
    want=$(basename "$1" .pid); [ "$want" = mysqld ] && want=mariadbd
    case "$(cat "/proc/$p/comm" 2>/dev/null)" in "$want"*) return 0 ;; *) return 1 ;; esac
}
wait_for() {  # seconds command... ; polls every 0.2 s
    local n=$(( $1 * 5 )); shift
    for _ in $(seq 1 "$n"); do "$@" && return 0; sleep 0.2; done
    "$@"
}
stop_pid() {  # pidfile
    pid_alive "$1" || { rm -f "$1"; return 0; }
    local p; p=$(cat "$1"); kill "$p" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$p" 2>/dev/null || true
    rm -f "$1"
}

[ "$(id -u)" = 0 ] || { log "must run as root"; exit 1; }

# ---------------------------------------------------------------- packages
have_acct() { [ -x /usr/sbin/slurmdbd ] && [ -x /usr/sbin/mariadbd ]; }
ACCT=${SLURM_CI_ACCOUNTING:-auto}
case "$ACCT" in
    auto) if have_acct; then ACCT=1; else ACCT=0; fi ;;
    1|0) ;;
    *) log "SLURM_CI_ACCOUNTING must be auto, 1 or 0"; exit 2 ;;
esac
need_pkgs=()
[ -x /usr/sbin/munged ]    || need_pkgs+=(munge)
[ -x /usr/sbin/slurmctld ] || need_pkgs+=(slurmctld)
[ -x /usr/sbin/slurmd ]    || need_pkgs+=(slurmd)
command -v sbatch >/dev/null 2>&1 || need_pkgs+=(slurm-client)
if [ "$ACCT" = 1 ]; then
    [ -x /usr/sbin/slurmdbd ] || need_pkgs+=(slurmdbd)
    [ -x /usr/sbin/mariadbd ] || need_pkgs+=(mariadb-server)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
    if [ "${SLURM_CI_INSTALL:-0}" = 1 ]; then
        log "installing ${need_pkgs[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -q "${need_pkgs[@]}" >/dev/null
    else
        log "missing packages: ${need_pkgs[*]} (apt-get install -y ${need_pkgs[*]}, or SLURM_CI_INSTALL=1)"
        exit 2
    fi
fi

install -d -m 0755 "$RUNDIR" "$LOGDIR" "$STATEDIR" "$SPOOLDIR" /etc/slurm

# ---------------------------------------------------------------- munge
MUNGE_USER=munge
id "$MUNGE_USER" >/dev/null 2>&1 || MUNGE_USER=root
install -d -m 0700 -o "$MUNGE_USER" -g "$MUNGE_USER" /etc/munge /var/log/munge
install -d -m 0711 -o "$MUNGE_USER" -g "$MUNGE_USER" /var/lib/munge
install -d -m 0755 -o "$MUNGE_USER" -g "$MUNGE_USER" /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    log "creating /etc/munge/munge.key"
    if command -v mungekey >/dev/null 2>&1; then
        mungekey --create --keyfile=/etc/munge/munge.key --force
    else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
fi
chown "$MUNGE_USER:$MUNGE_USER" /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
if ! munge_ok; then
    # A pid file / socket left by a previous boot or a killed munged blocks a new one.
    pid_alive /run/munge/munged.pid || rm -f /run/munge/munged.pid /run/munge/munge.socket.2*
    log "starting munged"
    if [ "$MUNGE_USER" = root ]; then
        /usr/sbin/munged </dev/null >/dev/null 2>&1 || true
    else
        runuser -u "$MUNGE_USER" -- /usr/sbin/munged </dev/null >/dev/null 2>&1 || true
    fi
    wait_for 10 munge_ok || die "munged did not come up (munge -n | unmunge fails)"
fi

# ---------------------------------------------------------------- slurm.conf
NCPU=${SLURM_CI_CPUS:-$(nproc)}
if [ -n "${SLURM_CI_MEM_MB:-}" ]; then
    MEM=$SLURM_CI_MEM_MB
else
    det=$(slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -n1)
    [ -n "$det" ] || det=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 ))
    MEM=$(( det * 9 / 10 ))
    [ "$MEM" -gt 16384 ] && MEM=16384
fi
DEFMEM=${SLURM_CI_DEFMEM_MB:-512}
if [ "$ACCT" = 1 ]; then
    ACCT_LINES="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819"
else
    ACCT_LINES="AccountingStorageType=accounting_storage/none"
fi

new_conf=$(cat <<EOF
$MARK
# Rewritten on every run; edit the script, not this file.
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
$ACCT_LINES
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$DEFMEM
SlurmdParameters=config_overrides
ReturnToService=2
EnforcePartLimits=ALL
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
MinJobAge=3600
KillWait=5
InactiveLimit=0
Waittime=0
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$STATEDIR
SlurmdSpoolDir=$SPOOLDIR
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$NCPU Sockets=1 CoresPerSocket=$NCPU ThreadsPerCore=1 RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
)

if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF" && [ "${SLURM_CI_FORCE:-0}" != 1 ]; then
    log "$CONF exists and was not written by this script; set SLURM_CI_FORCE=1 to overwrite"
    exit 3
fi
conf_changed=0
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$new_conf" ]; then
    printf '%s\n' "$new_conf" > "$CONF.tmp.$$" && mv -f "$CONF.tmp.$$" "$CONF"
    chmod 0644 "$CONF"
    conf_changed=1
    log "wrote $CONF (CPUs=$NCPU RealMemory=$MEM DefMemPerCPU=$DEFMEM accounting=$ACCT)"
fi

# ---------------------------------------------------------------- MariaDB + slurmdbd
db_ok() { mariadb-admin --connect-timeout=2 ping >/dev/null 2>&1; }
dbd_ok() { timeout 5 sacctmgr -n -P list cluster format=cluster >/dev/null 2>&1; }
dbd_conf_changed=0
if [ "$ACCT" = 1 ]; then
    if ! db_ok; then
        install -d -m 0755 -o mysql -g mysql /run/mysqld
        pid_alive "$DB_PID" || rm -f "$DB_PID" /run/mysqld/mysqld.sock*
        if [ ! -d /var/lib/mysql/mysql ]; then
            log "initialising MariaDB data directory"
            mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null 2>&1 \
                || die "mariadb-install-db failed"
        fi
        log "starting mariadbd"
        setsid /usr/sbin/mariadbd --user=mysql --pid-file="$DB_PID" \
            --bind-address=127.0.0.1 --innodb-buffer-pool-size=64M \
            --log-error="$LOGDIR/mariadb.log" </dev/null >/dev/null 2>&1 &
        touch "$DB_OURS"
        wait_for "$TIMEOUT" db_ok || die "mariadbd did not come up"
    fi
    mariadb -u root <<SQL || die "could not create the accounting database/user"
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';
SQL
    new_dbd=$(cat <<EOF
$MARK
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=$DB_NAME
StorageUser=$DB_USER
StoragePass=$DB_PASS
LogFile=$LOGDIR/slurmdbd.log
PidFile=$DBD_PID
DebugLevel=info
EOF
)
    if [ ! -f "$DBDCONF" ] || [ "$(cat "$DBDCONF")" != "$new_dbd" ]; then
        if [ -f "$DBDCONF" ] && ! grep -qF "$MARK" "$DBDCONF" && [ "${SLURM_CI_FORCE:-0}" != 1 ]; then
            log "$DBDCONF exists and was not written by this script; set SLURM_CI_FORCE=1"; exit 3
        fi
        ( umask 077; printf '%s\n' "$new_dbd" > "$DBDCONF.tmp.$$" ) && mv -f "$DBDCONF.tmp.$$" "$DBDCONF"
        dbd_conf_changed=1
    fi
    chown root:root "$DBDCONF"; chmod 0600 "$DBDCONF"   # slurmdbd refuses other modes
    [ "$dbd_conf_changed" = 1 ] && stop_pid "$DBD_PID"
    if ! pid_alive "$DBD_PID"; then
        rm -f "$DBD_PID"
        log "starting slurmdbd"
        setsid /usr/sbin/slurmdbd </dev/null >>"$LOGDIR/slurmdbd.stdout" 2>&1 || die "slurmdbd failed to start"
    fi
    wait_for "$TIMEOUT" dbd_ok || die "slurmdbd not answering (sacctmgr list cluster)"
    if ! sacctmgr -n -P list cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER"; then
        sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr add cluster $CLUSTER failed"
    fi
fi

# ---------------------------------------------------------------- slurmctld + slurmd
if [ "$conf_changed" = 1 ]; then
    # Node definitions and plugin choices only take effect on restart.
    if pid_alive "$SLURMD_PID" || pid_alive "$CTLD_PID"; then
        n=$(timeout 5 squeue -h -t R,CG 2>/dev/null | wc -l || true)
        [ "${n:-0}" -gt 0 ] && log "WARNING: $n running job(s) may be lost or re-run by the restart"
        log "config changed: restarting slurmctld/slurmd"
    fi
    # slurmctld first, so that it cannot launch a job onto a slurmd that is going away.
    stop_pid "$CTLD_PID"; stop_pid "$SLURMD_PID"
fi
ctld_ok() { timeout 5 scontrol ping 2>/dev/null | grep -q 'is UP'; }
if ! pid_alive "$CTLD_PID"; then
    rm -f "$CTLD_PID"
    ctld_args=()
    [ "${SLURM_CI_CLEAN:-0}" = 1 ] && ctld_args+=(-c)
    log "starting slurmctld"
    setsid /usr/sbin/slurmctld "${ctld_args[@]}" </dev/null >>"$LOGDIR/slurmctld.stdout" 2>&1 \
        || die "slurmctld failed to start"
fi
wait_for "$TIMEOUT" ctld_ok || die "slurmctld not answering (scontrol ping)"

if ! pid_alive "$SLURMD_PID"; then
    rm -f "$SLURMD_PID"
    log "starting slurmd"
    setsid /usr/sbin/slurmd -N localhost </dev/null >>"$LOGDIR/slurmd.stdout" 2>&1 \
        || die "slurmd failed to start"
fi

# ---------------------------------------------------------------- wait for idle
state=""
for _ in $(seq 1 $(( TIMEOUT * 4 ))); do
    state=$(timeout 5 sinfo -h -N -n localhost -o '%T' 2>/dev/null | head -n1 || true)
    case "$state" in
        idle|mixed|allocated|completing) break ;;
        drain*|down*|fail*)
            # DOWN/DRAIN restored from the saved state of an earlier run: bring it back.
            timeout 5 scontrol update NodeName=localhost State=RESUME >/dev/null 2>&1 || true ;;
    esac
    pid_alive "$SLURMD_PID" || { sleep 0.5; pid_alive "$SLURMD_PID" || die "slurmd exited"; }
    sleep 0.25
done
case "$state" in
    idle|mixed|allocated|completing) ;;
    *) die "node localhost not idle after ${TIMEOUT}s (state: '${state:-none}')" ;;
esac
el=$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
log "SLURM up in ${el}s: node localhost $state, $(sinfo -h -o '%P %c CPUs %m MB' | head -n1), accounting=$ACCT"
exit 0
