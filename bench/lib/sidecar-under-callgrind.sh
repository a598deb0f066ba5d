# Sourced by bench/symbol-order/generate.sh and bench/instructions/per-request.sh:
# a copy of mesh-bench whose `mesh-proxy` is a wrapper running a given sidecar
# build under callgrind (mesh-bench finds the binaries it starts beside itself).

# bench_dir REL WORK: WORK/bin holds a copy of REL/mesh-bench and links to
# REL's other binaries, except mesh-proxy (the wrapper's place).
bench_dir() {
  local rel=$1 work=$2 b n
  mkdir "$work/bin"
  cp "$rel/mesh-bench" "$work/bin/"
  for b in "$rel"/*; do
    n=$(basename "$b")
    if [ -f "$b" ] && [ -x "$b" ] && [ ! -e "$work/bin/$n" ] && [ "$n" != mesh-proxy ]; then
      ln -s "$b" "$work/bin/$n"
    fi
  done
}

# sidecar_wrapper WORK SIDECAR OUT VALGRIND-ARGS...: WORK/bin/mesh-proxy runs
# SIDECAR under VALGRIND-ARGS, one log and one callgrind file per process in
# OUT (made writable: the bench's sidecars run as UID 1337).
sidecar_wrapper() {
  local work=$1 sidecar=$2 out=$3
  shift 3
  mkdir -m 777 "$out"
  cat > "$work/bin/mesh-proxy" <<WRAP
#!/bin/sh
exec $* --log-file=$out/vg.%p.log --callgrind-out-file=$out/cg.%p.out "$sidecar" "\$@"
WRAP
  chmod +x "$work/bin/mesh-proxy"
}
