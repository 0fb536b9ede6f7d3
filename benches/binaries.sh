# Sourced by the bench scripts, from the repository root: the binaries they run.

# Sets EXFLOW, the exflow to measure: as given, or this checkout's release build (built now).
exflow_binary() {
  if [ -z "${EXFLOW:-}" ]; then
    cargo build --release --quiet
    EXFLOW=target/release/exflow
  fi
}

# Sets FLOWGEN, the independent load generator (../shared/tools/flowgen): as given, or
# built into target/flowgen when missing.
flowgen_binary() {
  FLOWGEN=${FLOWGEN:-target/flowgen/release/flowgen}
  [ -x "$FLOWGEN" ] || cargo build --release --quiet \
    --manifest-path ../shared/tools/flowgen/Cargo.toml --target-dir target/flowgen
}
