# Shared by the bench shell scripts: source it after setting OUT.
step() {  # step NAME COMMAND...: run it, print and keep its wall time in OUT/times.txt
  local name=$1 start
  shift
  start=$(date +%s)
  "$@"
  echo "$name $(( $(date +%s) - start )) s" | tee -a "$OUT/times.txt"
}
