# CPU time of processes from /proc, in clock ticks (getconf CLK_TCK a second), for the floor's
# scripts: `. "$(dirname "$0")/proc.sh"`. proc(5): fields 14 and 15 of /proc/PID/stat are the
# process's user and system time (all its threads), 16 and 17 those of its waited-for children.
# tree PID: PID and every process under it, one a line.
tree() { echo "$1"; for child in $(pgrep -P "$1"); do tree "$child"; done; }
# ticks PID...: their user and system time together; a process gone counts 0.
ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo $t; }
# tree_ticks PID: ticks of PID's whole tree.
# shellcheck disable=SC2046  # one PID a word
tree_ticks() { ticks $(tree "$1"); }
# pg_ticks POSTMASTER: PostgreSQL's time, backends that exited included (the postmaster's
# cutime and cstime keep what a backend spent once it has exited and been waited for).
pg_ticks() { echo $(( $(tree_ticks "$1") + $(awk '{print $16 + $17}' "/proc/$1/stat") )); }
