#!/usr/bin/env bash
# Stop the single-node CI cluster started by .ci/start_slurm.sh.
# Kills only the daemons named in their pid files (and MariaDB only if start_slurm.sh
# started it).  Running/pending jobs are cancelled first.
#   SLURM_CI_KEEP_MUNGE=1  leave munged running
#   SLURM_CI_PURGE=1       also delete saved job/node state and the accounting database
#                          (clean start next time; job ids restart at 1)
set -uo pipefail
RUNDIR=/run/slurm

stop_pid() {  # name pidfile
    local name=$1 f=$2 p
    # Only a live process whose name matches (a stale pid file may name another process).
    if [ -s "$f" ] && p=$(cat "$f") && kill -0 "$p" 2>/dev/null \
        && [[ "$(cat "/proc/$p/comm" 2>/dev/null)" == "$name"* ]]; then
        echo "[stop_slurm] stopping $name (pid $p)" >&2
        kill "$p" 2>/dev/null
        for _ in $(seq 1 75); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$p" 2>/dev/null && kill -9 "$p" 2>/dev/null
    fi
    rm -f "$f"
}

if command -v squeue >/dev/null 2>&1 && timeout 5 scontrol ping 2>/dev/null | grep -q 'is UP'; then
    jobs=$(timeout 5 squeue -h -o '%i' 2>/dev/null | tr '\n' ' ')
    if [ -n "${jobs// }" ]; then
        echo "[stop_slurm] cancelling jobs: $jobs" >&2
        # shellcheck disable=SC2086
        timeout 10 scancel --full $jobs >/dev/null 2>&1 || true
        for _ in $(seq 1 25); do [ -z "$(squeue -h -t R,CG 2>/dev/null)" ] && break; sleep 0.2; done
    fi
fi
stop_pid slurmctld "$RUNDIR/slurmctld.pid"
stop_pid slurmd "$RUNDIR/slurmd.pid"
stop_pid slurmdbd "$RUNDIR/slurmdbd.pid"
if [ "${SLURM_CI_PURGE:-0}" = 1 ] && mariadb-admin --connect-timeout=2 ping >/dev/null 2>&1; then
    # Job ids restart at 1 after a purge: drop the accounting database too, or sacct
    # would mix old and new jobs with the same id.
    mariadb -u root -e "DROP DATABASE IF EXISTS slurm_acct_db" || true
fi
if [ -e "$RUNDIR/mariadb.started-by-ci" ]; then
    stop_pid mariadbd /run/mysqld/mysqld.pid
    rm -f "$RUNDIR/mariadb.started-by-ci"
fi
[ "${SLURM_CI_KEEP_MUNGE:-0}" = 1 ] || stop_pid munged /run/munge/munged.pid
if [ "${SLURM_CI_PURGE:-0}" = 1 ]; then
    rm -rf /var/spool/slurmctld-ci /var/spool/slurmd-ci
fi
exit 0
