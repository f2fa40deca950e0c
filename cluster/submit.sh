#!/usr/bin/env bash
# Submit the xQG job to a running Ray cluster (`ray up -y cluster/aws-gpu.yaml` first).
#   cluster/submit.sh conf/xor-tydi.yaml output_dir=s3://your-bucket/xqg-ray/runs/2026-11-22
#   cluster/submit.sh conf/xor-tydi-train.yaml output_dir=...   # + the encoder trained on the questions
# Prints the submission id and returns; follow it with
#   ray job status|logs --follow|stop SUBMISSION_ID
# RAY_ADDRESS defaults to the dashboard of a `ray up` cluster forwarded to this
# machine by `ray dashboard cluster/aws-gpu.yaml` (in another terminal).
# No credentials are sent: the nodes read and write S3 through their instance
# profile (the AWS default chain).
set -euo pipefail
config=${1:?usage: cluster/submit.sh CONFIG [key=value ...]}
shift
cd "$(dirname "$0")/.."
if [ ! -f "$config" ]; then
  echo "cluster/submit.sh: no config $config (try conf/xor-tydi.yaml)" >&2
  exit 2
fi
export RAY_ADDRESS=${RAY_ADDRESS:-http://127.0.0.1:8265}
# Dependencies come from the cluster's images and setup_commands; the working
# directory (this checkout, without outputs, the local venv and git data) carries
# the xqg_ray package, jobs/ and conf/.
exec ray job submit --no-wait --working-dir . \
  --runtime-env-json '{"excludes": ["out/", ".venv/", ".git/"]}' \
  -- python jobs/run_xqg.py "$config" ray.address=auto "$@"
