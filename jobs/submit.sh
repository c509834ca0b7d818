#!/usr/bin/env bash
# Submit a search to a running Ray cluster (any of them: `ray up`, KubeRay, SLURM, on-premises) as a Ray job.
#
#   RAY_ADDRESS=http://127.0.0.1:8265 bash jobs/submit.sh [extra `p2m search launch` flags]
#
# RAY_ADDRESS is the cluster's job server (the dashboard port). With token authentication on (the templates
# here turn it on), `export RAY_AUTH_MODE=token` and have the cluster's token in ~/.ray/auth_token or
# RAY_AUTH_TOKEN. The token is not encryption, so reach the job server through a tunnel, never an open port: `ray dashboard jobs/ray-cluster.yaml`, `kubectl port-forward
# svc/<cluster>-head-svc 8265`, or `ssh -L 8265:127.0.0.1:8265 <head node>`.
#
# EDIT: SEARCH_CONFIG (a search YAML on the shared file system), DATA and STORAGE (paths every node sees:
# NFS, Lustre, EFS, a ReadWriteMany volume). The driver runs on the head node and its trials on the workers.
set -euo pipefail

RAY_ADDRESS="${RAY_ADDRESS:-http://127.0.0.1:8265}"
SEARCH_CONFIG="${SEARCH_CONFIG:-/shared/configs/search.yaml}"   # EDIT
DATA="${DATA:-/shared/data}"                                     # EDIT
STORAGE="${STORAGE:-/shared/experiments}"                        # EDIT
NAME="${NAME:-p2m-$(date +%Y%m%d-%H%M%S)}"

# --address auto: the job's driver joins the cluster it was submitted to
exec ray job submit --address "$RAY_ADDRESS" --submission-id "$NAME" -- \
    p2m search launch --address auto --config "$SEARCH_CONFIG" --data "$DATA" --storage-path "$STORAGE" \
    --name "$NAME" --quiet "$@"

# After a lost driver (the job failed or was stopped), continue the same experiment:
#   ray job submit --address "$RAY_ADDRESS" -- p2m search resume --address auto "$STORAGE/$NAME"
# Then race the best trials on fresh seeds (unless the config's race: section did at the end of the search) and
# retrain the winner and the baselines on other fresh seeds, as trials on the cluster (run again to resume):
#   ray job submit --address "$RAY_ADDRESS" -- p2m search race --address auto "$STORAGE/$NAME" --top 3 --seeds 8
#   ray job submit --address "$RAY_ADDRESS" -- p2m search train-best --address auto "$STORAGE/$NAME" --seeds 8 --with-baselines
# and, on any machine that sees the storage:
#   p2m results analyze "$STORAGE/$NAME"
