#!/usr/bin/env bash
# Regenerates every language's code from proto/. CI runs this and fails when
# the committed tree differs from what it produces.
#
#   TypeScript  proto/gen/                 protoc-gen-es (npm), through buf.gen.yaml
#               proto/fast/                tools/protoc-gen-jobwire-fast (this repository), through buf.gen.yaml
#   Go          clients/go/gen/            protoc-gen-go, protoc-gen-connect-go (go install), through buf.gen.yaml
#   Python      clients/python/src/jobwire/v1/   grpcio-tools, clients/python/scripts/generate.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

# Go plugins are pinned here and installed into .tools/bin, never from PATH,
# so every machine generates byte-identical code.
export GOBIN="$root/.tools/bin"
export PATH="$GOBIN:$root/node_modules/.bin:$PATH"
if [ -f scripts/go-plugins.txt ]; then
  while read -r mod; do
    [ -z "$mod" ] || [ "${mod#\#}" != "$mod" ] && continue
    bin=$(basename "${mod%@*}")
    [ -x "$GOBIN/$bin" ] || go install "$mod"
  done < scripts/go-plugins.txt
fi

# The fast-codec plugin is TypeScript in this repository: compile it first.
tsc -b tools/protoc-gen-jobwire-fast

buf generate

if [ -f clients/python/scripts/generate.sh ]; then
  bash clients/python/scripts/generate.sh
fi
