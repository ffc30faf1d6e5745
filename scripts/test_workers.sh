#!/usr/bin/env bash
# Prints the pytest-xdist arguments `make test` uses: two workers ("-n 2 --dist loadfile") when this machine, or
# the container it runs in, has at least 2 CPUs and 20 GB of memory; else nothing, for one test process.
# Two workers hold up to ~19 GiB at once (docs/BENCHMARKS.md, "Test suite"). The limits of a container
# (cgroup v1 or v2) count, not only what /proc/meminfo and nproc see. NPROC, MEMINFO and CGROUP override the
# sources (tests/unit/test_test_workers.py).
set -euo pipefail
cpus=${NPROC:-$(nproc)}
meminfo=${MEMINFO:-/proc/meminfo}
cgroup=${CGROUP:-/sys/fs/cgroup}
mem_kb=$(awk '/^MemTotal:/ {print $2}' "$meminfo")

if [[ -r $cgroup/cpu.max ]]; then                     # v2: "QUOTA PERIOD" or "max PERIOD"
    read -r quota period < "$cgroup/cpu.max"
    [[ $quota != max ]] && cpus=$(( cpus < quota / period ? cpus : quota / period ))
elif [[ -r $cgroup/cpu/cpu.cfs_quota_us && -r $cgroup/cpu/cpu.cfs_period_us ]]; then    # v1: -1 = none
    quota=$(cat "$cgroup/cpu/cpu.cfs_quota_us"); period=$(cat "$cgroup/cpu/cpu.cfs_period_us")
    (( quota > 0 )) && cpus=$(( cpus < quota / period ? cpus : quota / period ))
fi
for limit_file in "$cgroup/memory.max" "$cgroup/memory/memory.limit_in_bytes"; do
    if [[ -r $limit_file ]]; then
        limit=$(cat "$limit_file")
        if [[ $limit != max ]] && (( limit / 1024 < mem_kb )); then mem_kb=$(( limit / 1024 )); fi
    fi
done
if (( cpus >= 2 && mem_kb >= 20000000 )); then
    echo "-n 2 --dist loadfile"
fi
