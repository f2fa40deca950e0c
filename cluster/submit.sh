#!/usr/bin/env bash
# Submit the xQG job to a running cluster (ray up cluster/aws-gpu.yaml first).
#   cluster/submit.sh conf/xor-tydi-gpu.yaml output_dir=s3://my-bucket/runs/2026-11-22
# RAY_ADDRESS defaults to the dashboard of a cluster started with `ray up`
# (use `ray dashboard cluster/aws-gpu.yaml` to forward it).
set -euo pipefail
config=${1:?usage: cluster/submit.sh CONFIG [key=value ...]}
shift
export RAY_ADDRESS=${RAY_ADDRESS:-http://127.0.0.1:8265}
# Dependencies come from the cluster's setup_commands; the working directory
# (this checkout, without outputs and the local venv) carries the xqg_ray package.
exec ray job submit --working-dir . \
  --runtime-env-json '{"excludes": ["out/", ".venv/", ".git/"]}' \
  -- python jobs/run_xqg.py "$config" ray.address=auto "$@"
