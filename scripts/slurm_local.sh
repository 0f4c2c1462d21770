#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine, for testing the Slurm launchers (test/test_slurm.py).
#
#   sudo bash scripts/slurm_local.sh start     # install if missing, configure, start, wait for an idle node
#   sudo bash scripts/slurm_local.sh status    # daemons, node state, queue
#   sudo bash scripts/slurm_local.sh stop      # cancel its jobs, stop the daemons by the PIDs in their pid files
#   sudo bash scripts/slurm_local.sh restart   # stop + start
#   sudo bash scripts/slurm_local.sh fail-node [REASON]  # a node failure: slurmd and every job process SIGKILLed, node DOWN
#   sudo bash scripts/slurm_local.sh resume-node # slurmd started again, node back to idle (requeued jobs then start)
#
# Needs root and a Debian/Ubuntu apt (packages slurmctld slurmd slurm-client munge, installed when
# missing, ~10 s). `start` is idempotent: when both daemons already answer it says so and changes
# nothing (use `restart` for a fresh cluster); otherwise it wipes the Slurm state dirs (stale DRAIN
# flags and old jobs), writes the config and starts munged (as user munge), slurmctld and slurmd.
#
# The cluster mimics the shape of a CSC Puhti GPU node where it can:
#   node        this host (NodeAddr 127.0.0.1), CPUs = nproc, RealMemory a little below MemTotal
#   GPUs        4 fake `gpu:v100` devices (/dev/soo-fake-v100-[0-3], char devices made with
#               `mknod c 1 3`, i.e. /dev/null) declared in gres.conf, so `--gres=gpu:v100:N` lines
#               (N <= 4) are accepted. They are not GPUs: jobs must still run with --use_cpu.
#   partitions  gpu (default, 3 days) and gputest (15 min, at most 2 nodes), as on Puhti
#   limits      EnforcePartLimits=ALL: a job asking for more CPUs/memory/GPUs than the node has is
#               rejected at submission instead of pending forever. A Puhti job script therefore
#               needs overrides here, e.g.
#                 sbatch -A test --ntasks-per-node=1 --cpus-per-task=1 --partition=gputest --time=15 submit_gemma_soo.sh
#   accounting  none: `-A ANYTHING` is accepted unchecked (sacct does not work)
# Files: /etc/slurm/slurm.conf and gres.conf (only overwritten when written by this script),
# logs in /var/log/slurm-local/, state in /var/lib/slurm-local/.
# Environment: SLURM_LOCAL_GPUS (fake GPUs, default 4; 0 = none, then use `sbatch --gres=none`).
set -euo pipefail

conf_dir=/etc/slurm
conf="$conf_dir/slurm.conf"
gres_conf="$conf_dir/gres.conf"
marker="# Written by scripts/slurm_local.sh"
state_dir=/var/lib/slurm-local
log_dir=/var/log/slurm-local
run_dir=/run/slurm-local
ctld_pid="$run_dir/slurmctld.pid"
slurmd_pid="$run_dir/slurmd.pid"
munge_pid=/run/munge/munged.pid
fake_gpus="${SLURM_LOCAL_GPUS:-4}"
node="$(hostname -s)"

say() { echo "slurm_local: $*"; }
die() { echo "slurm_local: error: $*" >&2; exit 1; }

need_root() {
  [ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages and starts system daemons)."
}

pid_alive() {  # pid_alive PIDFILE -> 0 when the file names a running process
  local pid
  [ -s "$1" ] || return 1
  pid="$(cat "$1" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

install_packages() {
  local missing=()
  command -v slurmctld >/dev/null || missing+=(slurmctld)
  command -v slurmd >/dev/null || missing+=(slurmd)
  command -v sbatch >/dev/null || missing+=(slurm-client)
  command -v munged >/dev/null || missing+=(munge)
  [ "${#missing[@]}" -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "missing ${missing[*]} and there is no apt-get to install them."
  say "installing ${missing[*]} with apt-get ..."
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq "${missing[@]}" >/tmp/slurm_local_apt.log 2>&1; then
    apt-get update -qq >>/tmp/slurm_local_apt.log 2>&1 || true
    apt-get install -y -qq "${missing[@]}" >>/tmp/slurm_local_apt.log 2>&1 \
      || { tail -n 20 /tmp/slurm_local_apt.log >&2; die "apt-get install ${missing[*]} failed (log: /tmp/slurm_local_apt.log)."; }
  fi
  say "installed: $(slurmctld -V 2>/dev/null || echo slurm)"
}

start_munge() {
  if pid_alive "$munge_pid"; then
    say "munged already running (pid $(cat "$munge_pid"))"
  else
    if [ ! -s /etc/munge/munge.key ]; then
      say "creating /etc/munge/munge.key"
      mkdir -p /etc/munge
      dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
    chown -R munge:munge /etc/munge && chmod 700 /etc/munge && chmod 400 /etc/munge/munge.key
    install -d -o munge -g munge -m 755 /run/munge
    install -d -o munge -g munge -m 700 /var/lib/munge /var/log/munge
    # Started by root it would refuse; run as its own user like the packaged service.
    runuser -u munge -- /usr/sbin/munged --pid-file="$munge_pid" \
      || die "munged did not start (see /var/log/munge/munged.log)."
    say "started munged as user munge (pid $(cat "$munge_pid"))"
  fi
  munge -n | unmunge >/dev/null || die "munge credentials do not round-trip (munge -n | unmunge)."
}

make_fake_gpus() {
  local i dev
  for ((i = 0; i < fake_gpus; i++)); do
    dev="/dev/soo-fake-v100-$i"
    if [ ! -c "$dev" ]; then
      rm -f "$dev"
      # A character device (here: the one /dev/null is) is what slurmd accepts as a GPU file.
      if ! mknod "$dev" c 1 3 2>/dev/null; then
        say "cannot create device files here (mknod $dev failed): no fake GPUs; submit with --gres=none"
        fake_gpus=0
        return 0
      fi
      chmod 666 "$dev"
    fi
  done
}

write_config() {
  local cpus mem_kb real_mb def_mem gres_line first_job_id
  first_job_id=$(( $(date +%s) % 50000000 + 1000 ))
  for file in "$conf" "$gres_conf"; do
    if [ -s "$file" ] && ! head -n 1 "$file" | grep -qF "$marker"; then
      die "$file exists and was not written by this script; not touching it (move it away first)."
    fi
  done
  # GNU nproc honours OMP_NUM_THREADS: a test run under OMP_NUM_THREADS=1 would get a 1-CPU node.
  cpus="$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)"
  mem_kb="$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
  real_mb=$(( mem_kb * 9 / 10 / 1024 ))          # below MemTotal, or slurmd marks the node invalid
  def_mem=$(( real_mb / cpus / 2 ))              # a job without --mem gets half the node per CPU
  [ "$def_mem" -ge 100 ] || def_mem=100
  gres_line=""
  [ "$fake_gpus" -gt 0 ] && gres_line="Gres=gpu:v100:$fake_gpus"
  mkdir -p "$conf_dir"
  # FirstJobId from the clock: job ids do not restart at 1 after the state wipe, so a new job
  # never appends to an old job's log (logs/%x-%j.out).
  # cred_expire=10: a requeued job may start again 10 s after it stopped (default 120 s).
  # MinJobAge=4 (s before a finished job is forgotten): `sbatch --wait` polls every 2 s while
  # MinJobAge/2 <= 2 (with the default 300 it backs off to 32 s); still long enough that it sees the end.
  cat >"$conf" <<EOF
$marker (one-node test cluster; rewritten on every start)
ClusterName=soolocal
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
StateSaveLocation=$state_dir/ctld
SlurmdSpoolDir=$state_dir/d
SlurmctldPidFile=$ctld_pid
SlurmdPidFile=$slurmd_pid
SlurmctldLogFile=$log_dir/slurmctld.log
SlurmdLogFile=$log_dir/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
EnforcePartLimits=ALL
DefMemPerCPU=$def_mem
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
MinJobAge=4
FirstJobId=$first_job_id
KillWait=30
GresTypes=gpu
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$real_mb $gres_line State=UNKNOWN
PartitionName=gpu Nodes=$node Default=YES MaxTime=3-00:00:00 State=UP
PartitionName=gputest Nodes=$node MaxTime=00:15:00 MaxNodes=2 State=UP
EOF
  {
    echo "$marker"
    echo "AutoDetect=off"
    [ "$fake_gpus" -gt 0 ] && echo "NodeName=$node Name=gpu Type=v100 File=/dev/soo-fake-v100-[0-$((fake_gpus - 1))]"
  } >"$gres_conf"
  say "wrote $conf (node $node: $cpus CPUs, ${real_mb} MB, ${fake_gpus} fake v100; partitions gpu, gputest) and $gres_conf"
}

wait_idle() {
  local state="" i
  for ((i = 0; i < 60; i++)); do
    state="$(sinfo -h -n "$node" -o %T 2>/dev/null | head -n 1 || true)"
    [ "$state" = "idle" ] && { say "node $node is idle; the cluster is ready (sinfo, sbatch, squeue work now)"; return 0; }
    sleep 0.5
  done
  echo "--- slurmctld.log ---" >&2; tail -n 15 "$log_dir/slurmctld.log" >&2 || true
  echo "--- slurmd.log ---" >&2; tail -n 15 "$log_dir/slurmd.log" >&2 || true
  die "node $node did not become idle in 30 s (state: '${state:-unknown}')."
}

running() { pid_alive "$ctld_pid" && pid_alive "$slurmd_pid"; }

do_start() {
  need_root
  install_packages
  if running && scontrol ping >/dev/null 2>&1; then
    say "already running (slurmctld pid $(cat "$ctld_pid"), slurmd pid $(cat "$slurmd_pid")); nothing changed. Use 'restart' for a fresh cluster."
    return 0
  fi
  stop_daemons quiet   # a half-started cluster (one daemon only) is restarted as a whole
  start_munge
  [ "$fake_gpus" -gt 0 ] && make_fake_gpus
  rm -rf "$state_dir"
  mkdir -p "$state_dir/ctld" "$state_dir/d" "$log_dir" "$run_dir"
  say "wiped the state dir $state_dir"
  write_config
  slurmctld -i || die "slurmctld did not start (log: $log_dir/slurmctld.log)."
  for ((i = 0; i < 20; i++)); do scontrol ping >/dev/null 2>&1 && break; sleep 0.5; done
  say "started slurmctld (pid $(cat "$ctld_pid" 2>/dev/null || echo '?'))"
  slurmd || die "slurmd did not start (log: $log_dir/slurmd.log)."
  for ((i = 0; i < 20; i++)); do pid_alive "$slurmd_pid" && break; sleep 0.25; done
  say "started slurmd (pid $(cat "$slurmd_pid" 2>/dev/null || echo '?'))"
  wait_idle
}

stop_pidfile() {  # stop_pidfile NAME PIDFILE [quiet]
  local name="$1" file="$2" pid i
  if ! pid_alive "$file"; then
    [ "${3:-}" = quiet ] || say "$name not running"
    rm -f "$file"
    return 0
  fi
  pid="$(cat "$file")"
  kill -TERM "$pid"
  for ((i = 0; i < 40; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    say "$name (pid $pid) ignored TERM for 10 s; killed"
  else
    say "stopped $name (pid $pid)"
  fi
  rm -f "$file"
}

stop_daemons() {
  stop_pidfile slurmd "$slurmd_pid" "${1:-}"
  stop_pidfile slurmctld "$ctld_pid" "${1:-}"
}

do_stop() {
  need_root
  if pid_alive "$ctld_pid" && scontrol ping >/dev/null 2>&1; then
    local jobs
    jobs="$(squeue -h -o %i 2>/dev/null | tr '\n' ' ')"
    if [ -n "${jobs// /}" ]; then
      say "cancelling jobs of the local cluster: $jobs"
      # shellcheck disable=SC2086
      scancel $jobs || true
      for ((i = 0; i < 40; i++)); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.25; done
    fi
  fi
  stop_daemons
  stop_pidfile munged "$munge_pid"
}

do_status() {
  local code=0
  for pair in "munged:$munge_pid" "slurmctld:$ctld_pid" "slurmd:$slurmd_pid"; do
    if pid_alive "${pair#*:}"; then say "${pair%%:*} running (pid $(cat "${pair#*:}"))"; else say "${pair%%:*} not running"; code=3; fi
  done
  if [ "$code" -eq 0 ]; then
    sinfo -N -o "%N %P %T %c %m %G" || code=3
    squeue || true
  fi
  return "$code"
}

# The node dies as in a power loss: slurmd first (so it reports nothing), then every process of
# every job on it (each slurmstepd and everything below it) with SIGKILL, so no job gets to
# checkpoint or clean up; then the controller is told the node is DOWN, as it would conclude
# itself after SlurmdTimeout (300 s). Jobs submitted with --requeue go back to the queue
# (NODE_FAIL, Restarts+1); the others end as NODE_FAIL. A plain `scontrol update state=down`
# is gentler: slurmd, still alive, signals the jobs (TERM, KILL after KillWait) first.
job_process_ids() {  # every slurmstepd on this host and all their descendants
  ps -e -o pid=,ppid=,comm= | awk '
    { parent[$1] = $2; if ($3 == "slurmstepd") keep[$1] = 1 }
    END {
      for (changed = 1; changed;) {
        changed = 0
        for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; changed = 1 }
      }
      for (p in keep) print p
    }'
}

do_fail_node() {
  need_root
  local reason="${1:-slurm_local.sh fail-node}" pids
  running || die "the cluster is not running (start it first)."
  kill -KILL "$(cat "$slurmd_pid")" 2>/dev/null || true
  rm -f "$slurmd_pid"
  pids="$(job_process_ids | tr '\n' ' ')"
  # shellcheck disable=SC2086
  [ -n "${pids// /}" ] && kill -KILL $pids 2>/dev/null
  scontrol update nodename="$node" state=down reason="$reason" || die "scontrol could not set $node DOWN."
  say "node $node failed: slurmd and job processes [${pids% }] killed (SIGKILL), node DOWN ($reason)"
}

do_resume_node() {
  need_root
  pid_alive "$ctld_pid" || die "slurmctld is not running (use start)."
  if ! pid_alive "$slurmd_pid"; then
    slurmd || die "slurmd did not start (log: $log_dir/slurmd.log)."
    for ((i = 0; i < 20; i++)); do pid_alive "$slurmd_pid" && break; sleep 0.25; done
    say "started slurmd (pid $(cat "$slurmd_pid" 2>/dev/null || echo '?'))"
  fi
  # ReturnToService=2 returns a DOWN node when its slurmd registers; resume covers the rest (DRAIN).
  case "$(sinfo -h -n "$node" -o %T 2>/dev/null | head -n 1)" in
    down* | drain* | fail*) scontrol update nodename="$node" state=resume 2>/dev/null || true ;;
  esac
  local state="" i
  for ((i = 0; i < 60; i++)); do  # idle, or already running a requeued job
    state="$(sinfo -h -n "$node" -o %T 2>/dev/null | head -n 1 || true)"
    case "$state" in idle | mixed | allocated | completing) say "node $node is $state again"; return 0 ;; esac
    sleep 0.5
  done
  die "node $node did not come back in 30 s (state: '${state:-unknown}'; log: $log_dir/slurmd.log)."
}

case "${1:-}" in
  start) do_start ;;
  stop) do_stop ;;
  restart) do_stop; do_start ;;
  status) do_status ;;
  fail-node) do_fail_node "${2:-}" ;;
  resume-node) do_resume_node ;;
  *) echo "usage: $0 start|stop|restart|status|fail-node [REASON]|resume-node" >&2; exit 2 ;;
esac
