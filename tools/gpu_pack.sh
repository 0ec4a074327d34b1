#!/usr/bin/env bash
# Here, before a device call: builds the release binary, the kernel benchmarks and the unit tests
# (release, no debug info: they must fit in the 64 MiB that travel) and puts them with the Vulkan
# loader kit in .gl/ (git-ignored). Then: device run, carry [".gl"],
#   source .gl/env.sh; bash tools/gpu_session.sh
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
if [ -d ../shared/gpu-host ]; then bash ../shared/gpu-host/prepare.sh; fi
mkdir -p .gl
cargo build --release
exe() { sed -n "s|.*Executable $1 (\(.*\))|\1|p"; }
cp target/release/vlp-engine .gl/vlp-engine
cp "$(cargo bench --no-run 2>&1 | exe 'benches/kernels.rs')" .gl/kernels
cp "$(cargo test --release --lib --no-run 2>&1 | exe 'unittests src/lib.rs')" .gl/unit-tests
du -sh .gl
