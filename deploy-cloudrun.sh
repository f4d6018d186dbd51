#!/usr/bin/env bash
# Build and deploy the CLIP server and the Whisper worker to Cloud Run, one NVIDIA L4 each.
#
#   ./deploy-cloudrun.sh PROJECT REGION                  build and deploy both services
#   ./deploy-cloudrun.sh --dry-run PROJECT REGION        print every command, run none
#   ./deploy-cloudrun.sh help                            all commands and options
#
# Settings come from deploy.env (see deploy.env.example), then flags. docs/deploy.md (Deploying to Cloud Run) explains
# every default. Avoids bash 4 features so macOS's bash 3.2 can run it (tested with bash 5).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"  # Cloud Build configs and the build context are repo-relative.

# Unit prices in USD: Cloud Run Tier 1 regions (us-central1, europe-west1, ...), instance-based
# billing, which --no-cpu-throttling selects and GPUs require. From cloud.google.com/run/pricing
# as of June 2025; update PRICE_DATE with any number. Instance-based billing has no per-request
# fee; its free tier (per billing account, shared by all services) is CPU and memory only.
PRICE_DATE=2025-06
PRICE_VCPU_S=0.000018
PRICE_GIB_S=0.000002
PRICE_L4_S=0.0001867       # NVIDIA L4, no zonal redundancy
PRICE_L4_ZR_S=0.0002909    # NVIDIA L4, zonal redundancy
FREE_VCPU_S=240000
FREE_GIB_S=450000
SECONDS_PER_MONTH=2628000  # 730 hours, the pricing calculator's month

usage() {
  cat <<'EOF'
Usage: deploy-cloudrun.sh [options] PROJECT REGION [COMMAND [ARGS]]
       deploy-cloudrun.sh [options] COMMAND [ARGS]      (PROJECT/REGION from --project/--region or deploy.env)

Commands (SERVICE is clip, worker or a Cloud Run service name; default all):
  deploy [clip|worker|all]     enable APIs, create the registry, service account and API key secret
                               when missing, build with Cloud Build, deploy (the default command)
  build [clip|worker|all]      build and push the images only
  status [clip|worker|all]     service details (URL, traffic split) and recent revisions
  url [clip|worker]            print the service URL
  logs SERVICE                 recent log lines
  traffic SERVICE TAG=PCT[,..] split traffic between tagged revisions (staged rollout)
  promote SERVICE              send 100% of traffic to the latest revision
  rollback SERVICE REVISION    send 100% of traffic to REVISION
  delete [clip|worker|all]     delete the services (asks first unless --yes)
  cost [clip|worker]           monthly cost estimate (needs --requests and --seconds)
  job clip|worker ACTION       Cloud Run Job (batch mode, python -m server.job / worker.job); ACTION:
                                 deploy    build (unless --skip-build) and create/update the job
                                 execute   run it (--input SRC --output DST --tasks N override)
                                 status    the job and its recent executions
                                 logs      recent log lines of its tasks
  triggers clip|worker [KIND]   event sources for the service's /events routes; KIND, one or
                               more (default: pubsub tasks):
                                 pubsub    topic, dead-letter topic, OIDC push subscription to
                                           /events/pubsub, Cloud Storage notification (EVENTS_BUCKET)
                                 eventarc  Eventarc trigger on object finalize -> /events/storage
                                 tasks     Cloud Tasks queue with rate limits and OIDC tokens
  alerts [FILE..]              Cloud Monitoring alert policies from alerts/*.yaml (create or update)
  help                         this text

Options:
  --project ID, --region REGION   where to deploy
  --env-file FILE                 settings file (default: ./deploy.env when it exists)
  --dry-run                       print each command, shell-quoted, one per line; run none
  --no-traffic --tag NAME         deploy a new revision without traffic, reachable at its tag URL
  --skip-build                    deploy an image already pushed (with --image-tag)
  --allow-unpinned-base           build even if requirements/base-images.lock holds a tag without
                                  a digest (scripts/pin-base-images.sh resolves them)
  --image-tag TAG                 image tag to build/deploy (default: UTC time + git commit)
  --api-key-file FILE             add FILE's content (no trailing newline; - for stdin) as the new
                                  API key version in Secret Manager
  --redis-uri-file FILE           add FILE's content (redis://..., no trailing newline) as the new
                                  version of REDIS_URI_SECRET (RATE_LIMIT_STORAGE_URI of the services)
  --zonal-redundancy              GPU zonal redundancy (dearer; default off, see docs/deploy.md)
  --no-zonal-redundancy
  --yes                           do not ask before delete
Job options:
  --input SRC --output DST        JOB_INPUT / JOB_OUTPUT (gs:// prefix, manifest) for deploy/execute
  --tasks N --parallelism P       override the job's task count / tasks running at once
  --wait                          job execute: wait for the execution to finish
Cost options:
  --requests N --seconds S        requests per month, seconds one request holds an instance
  --concurrency C                 requests an instance serves at once on average (default 1)
  --cpu N --memory SIZE           override the service's settings (e.g. 4, 16Gi)
  --min-instances N               instances kept warm all month
EOF
}

log() { printf '%s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }

# Shell-quote one argument only where needed, so printed lines stay readable and paste as-is.
quote() {
  if [[ $1 =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# Values never printed (the API key when a trigger must carry it): print_cmd shows *** instead.
MASKED=()

print_cmd() {
  local out="" arg secret
  for arg in "$@"; do out+="${out:+ }$(quote "$arg")"; done
  for secret in ${MASKED[@]+"${MASKED[@]}"}; do out=${out//"$secret"/***}; done
  printf '%s\n' "$out"
}

# Every command that changes or reads the cloud goes through run: printed in a dry run, echoed
# to stderr and executed otherwise.
run() {
  if [[ $DRY_RUN == true ]]; then
    print_cmd "$@"
  else
    log "+ $(print_cmd "$@")"
    "$@"
  fi
}

# describe_create_or_update DESCRIBE... -- CREATE... -- UPDATE...: converge an existing resource
# to the settings (a rotated key, a changed rate). A dry run prints the describe and the create.
describe_create_or_update() {
  local describe=() create=()
  while [[ $1 != "--" ]]; do describe+=("$1"); shift; done
  shift
  while [[ $1 != "--" ]]; do create+=("$1"); shift; done
  shift
  if [[ $DRY_RUN == true ]]; then
    print_cmd "${describe[@]}"
    print_cmd "${create[@]}"
  elif "${describe[@]}" >/dev/null 2>&1; then
    run "$@"
  else
    run "${create[@]}"
  fi
}

# describe_or_create DESCRIBE... -- CREATE...: idempotent creation. A dry run prints both.
describe_or_create() {
  local describe=()
  while [[ $1 != "--" ]]; do describe+=("$1"); shift; done
  shift
  if [[ $DRY_RUN == true ]]; then
    print_cmd "${describe[@]}"
    print_cmd "$@"
  elif "${describe[@]}" >/dev/null 2>&1; then
    log "exists: $(print_cmd "${describe[@]}")"
  else
    run "$@"
  fi
}

# ---------------------------------------------------------------------------------------------
# Settings: deploy.env, then flags, then these defaults.

load_settings() {
  : "${AR_REPO:=gpu-inference}"
  : "${CLIP_SERVICE:=clip-server}"
  : "${WORKER_SERVICE:=whisper-worker}"
  : "${CLIP_IMAGE:=clip-server}"
  : "${WORKER_IMAGE:=whisper-worker}"
  : "${RUN_SA_NAME:=gpu-inference-run}"
  : "${SERVICE_ACCOUNT:=}"
  : "${API_KEY_SECRET=gpu-inference-api-key}"  # '=' not ':=': empty means "no API key"
  : "${ALLOW_UNAUTHENTICATED:=true}"
  : "${GPU_ZONAL_REDUNDANCY:=false}"
  : "${RATE_LIMIT:=}"
  : "${RATE_LIMIT_STORAGE_URI:=}"
  : "${MAX_REQUEST_MB:=30}"
  : "${EXTRA_ENV_VARS:=}"
  # 24 x 10 s = 240 s: the most a Cloud Run startup probe may take (failureThreshold x periodSeconds).
  : "${STARTUP_PROBE_PERIOD_S:=10}"
  : "${STARTUP_PROBE_FAILURE_THRESHOLD:=24}"
  : "${STARTUP_PROBE_TIMEOUT_S:=5}"
  # Liveness: /livez is answered by the gunicorn worker's main loop (never queued behind busy
  # threads) and fails only when the instance is wedged (dead/hung batcher, or no answer at all);
  # 3 misses x 10 s and Cloud Run replaces the instance. The values of docs/deploy.md. Empty = off.
  : "${LIVENESS_PROBE_PATH=/livez}"
  : "${LIVENESS_PROBE_PERIOD_S:=10}"
  : "${LIVENESS_PROBE_FAILURE_THRESHOLD:=3}"
  : "${LIVENESS_PROBE_TIMEOUT_S:=2}"
  # Secrets beside the API key: each empty = not used. The Redis URI carries a password, so it
  # reaches the services only through --set-secrets (never --set-env-vars).
  : "${REDIS_URI_SECRET:=}"
  # Callback job records (GET /jobs/<id>) every instance can answer: one object per job under
  # gs://JOB_STORE_BUCKET/jobs/<service>/. Empty: Redis when REDIS_URI_SECRET is set, else each
  # instance's own /tmp (shared by its processes only).
  : "${JOB_STORE_BUCKET:=}"
  : "${CALLBACK_SECRET_NAME:=}"
  # Direct VPC egress (or a Serverless VPC Access connector), added whenever REDIS_URI_SECRET is set
  # so a Memorystore address such as redis://10.0.0.3:6379 is reachable; private-ranges-only keeps
  # public traffic (Hugging Face is not used at run time; callbacks are) on Cloud Run's own egress.
  : "${VPC_NETWORK:=}"
  : "${VPC_SUBNET:=}"
  : "${VPC_CONNECTOR:=}"
  : "${VPC_EGRESS:=private-ranges-only}"

  # Least privilege: one identity per role. Services: runtime SA above; jobs: JOB_SA; Pub/Sub,
  # Eventarc and Cloud Tasks call the services as INVOKER_SA (roles/run.invoker on them only).
  : "${JOB_SA_NAME:=gpu-inference-job}"
  : "${JOB_SERVICE_ACCOUNT:=}"
  : "${INVOKER_SA_NAME:=gpu-inference-invoker}"
  : "${INVOKER_SERVICE_ACCOUNT:=}"

  # Events (triggers): uploads to <SVC>_EVENTS_BUCKET (under <SVC>_EVENTS_PREFIX) are processed
  # by the service, results written below <SVC>_EVENTS_OUTPUT (gs://bucket/prefix).
  : "${CLIP_EVENTS_BUCKET:=}"
  : "${CLIP_EVENTS_PREFIX:=}"
  : "${CLIP_EVENTS_OUTPUT:=}"
  : "${WORKER_EVENTS_BUCKET:=}"
  : "${WORKER_EVENTS_PREFIX:=}"
  : "${WORKER_EVENTS_OUTPUT:=}"
  # Pub/Sub push: the service answers only once the result is written, so the ack deadline is the
  # longest allowed; after PUBSUB_MAX_DELIVERY_ATTEMPTS a message goes to the dead-letter topic.
  : "${PUBSUB_ACK_DEADLINE_S:=600}"
  : "${PUBSUB_MAX_DELIVERY_ATTEMPTS:=5}"
  : "${TASKS_MAX_DISPATCHES_PER_SECOND:=5}"
  : "${TASKS_MAX_CONCURRENT_DISPATCHES:=16}"
  : "${TASKS_MAX_ATTEMPTS:=5}"
  # Alert policies: notification channel IDs (comma-separated), e.g. from
  # gcloud beta monitoring channels list. Empty = policies without notifications (console only).
  : "${ALERT_CHANNELS:=}"

  # CLIP: image decoding, not the L4, limits throughput on real photos, hence 8 vCPUs.
  : "${CLIP_MODEL:=ViT-B-32}"
  : "${CLIP_PRETRAINED:=openai}"
  : "${CLIP_PORT:=5001}"
  : "${CLIP_CPU:=8}"
  : "${CLIP_MEMORY:=32Gi}"
  : "${CLIP_WEB_THREADS:=32}"
  : "${CLIP_MAX_BATCH_SIZE:=32}"
  : "${CLIP_MAX_WAIT_MS:=10}"
  : "${CLIP_MIN_INSTANCES:=0}"
  : "${CLIP_MAX_INSTANCES:=1}"
  : "${CLIP_TIMEOUT:=60}"
  # CLIP batch job: CPU by default (image decoding dominates on real photos); CLIP_JOB_GPU=1 for an L4.
  : "${CLIP_JOB:=clip-embed-job}"
  : "${CLIP_JOB_GPU:=0}"
  : "${CLIP_JOB_CPU:=8}"
  : "${CLIP_JOB_MEMORY:=16Gi}"
  : "${CLIP_JOB_TASKS:=8}"
  : "${CLIP_JOB_PARALLELISM:=8}"
  : "${CLIP_JOB_MAX_RETRIES:=3}"
  : "${CLIP_JOB_TASK_TIMEOUT:=3600s}"
  : "${CLIP_JOB_INPUT:=}"
  : "${CLIP_JOB_OUTPUT:=}"

  # Whisper: GPU-bound; long audio needs a long request timeout.
  : "${WHISPER_MODEL:=large-v3}"
  : "${WHISPER_DEVICE:=auto}"
  : "${WHISPER_COMPUTE_TYPE:=auto}"
  : "${WORKER_PORT:=8080}"
  : "${WORKER_CPU:=4}"
  : "${WORKER_MEMORY:=16Gi}"
  : "${WORKER_WEB_THREADS:=16}"
  : "${WORKER_MAX_BATCH_SIZE:=16}"
  : "${WORKER_MAX_WAIT_MS:=50}"
  : "${WORKER_MIN_INSTANCES:=0}"
  : "${WORKER_MAX_INSTANCES:=1}"
  : "${WORKER_TIMEOUT:=900}"
  # Whisper batch job: one L4 per task; each task running at once holds one L4 of the regional quota.
  : "${WORKER_JOB:=whisper-transcribe-job}"
  : "${WORKER_JOB_GPU:=1}"
  : "${WORKER_JOB_CPU:=4}"
  : "${WORKER_JOB_MEMORY:=16Gi}"
  : "${WORKER_JOB_TASKS:=4}"
  : "${WORKER_JOB_PARALLELISM:=2}"
  : "${WORKER_JOB_MAX_RETRIES:=3}"
  : "${WORKER_JOB_TASK_TIMEOUT:=3600s}"
  : "${WORKER_JOB_INPUT:=}"
  : "${WORKER_JOB_OUTPUT:=}"
}

# cfg SVC NAME: the per-service setting, e.g. cfg clip CPU -> $CLIP_CPU.
cfg() {
  local var
  var="$(printf '%s' "$1" | tr '[:lower:]' '[:upper:]')_$2"
  printf '%s' "${!var}"
}

require_target() {
  [[ -n $PROJECT ]] || die "PROJECT missing: ./deploy-cloudrun.sh PROJECT REGION ... or --project"
  [[ -n $REGION ]] || die "REGION missing: ./deploy-cloudrun.sh PROJECT REGION ... or --region"
}

# service_key clip|worker|NAME -> clip|worker
service_key() {
  case $1 in
    clip | "$CLIP_SERVICE") echo clip ;;
    worker | "$WORKER_SERVICE") echo worker ;;
    *) die "unknown service '$1' (clip, worker, $CLIP_SERVICE or $WORKER_SERVICE)" ;;
  esac
}

service_name() {
  local key
  key=$(service_key "$1") || exit 2  # bash clears set -e inside $(...): stop here explicitly
  cfg "$key" SERVICE
}

# expand_targets [clip|worker|all] -> the service keys, one per line.
expand_targets() {
  case ${1:-all} in
    all) printf '%s\n' clip worker ;;
    *) service_key "$1" ;;
  esac
}

image_ref() {
  printf '%s-docker.pkg.dev/%s/%s/%s:%s' "$REGION" "$PROJECT" "$AR_REPO" "$(cfg "$1" IMAGE)" "$IMAGE_TAG"
}

# ---------------------------------------------------------------------------------------------
# Deploy steps

enable_apis() {
  run gcloud services enable run.googleapis.com artifactregistry.googleapis.com \
    cloudbuild.googleapis.com secretmanager.googleapis.com --project="$PROJECT" --quiet
}

ensure_registry() {
  describe_or_create \
    gcloud artifacts repositories describe "$AR_REPO" --location="$REGION" --project="$PROJECT" -- \
    gcloud artifacts repositories create "$AR_REPO" --repository-format=docker \
    --location="$REGION" --description="GPU inference images" --project="$PROJECT" --quiet
}

# A dedicated runtime identity: it may read the API key secret and nothing else.
ensure_service_account() {
  if [[ -n $SERVICE_ACCOUNT ]]; then return 0; fi
  SERVICE_ACCOUNT="$RUN_SA_NAME@$PROJECT.iam.gserviceaccount.com"
  describe_or_create \
    gcloud iam service-accounts describe "$SERVICE_ACCOUNT" --project="$PROJECT" -- \
    gcloud iam service-accounts create "$RUN_SA_NAME" --display-name="Cloud Run GPU inference" \
    --project="$PROJECT" --quiet
}

# mask_uri URI: the URI with its password replaced by *** (as the services log it), for anything printed.
mask_uri() {
  local uri=$1
  if [[ $uri =~ ^([A-Za-z0-9+.-]+://)([^:@/]*):([^@/]*)@(.*)$ ]]; then
    printf '%s%s:***@%s' "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}" "${BASH_REMATCH[4]}"
  else
    printf '%s' "$uri"
  fi
}

# ensure_secret SECRET FILE WHAT: the secret exists, holds FILE's content as its newest version when
# FILE is given (else must have an enabled version), and only the runtime identity may read it.
# Values live only in Secret Manager: added from a file or stdin, never on a command line or in
# the service's plain env; Cloud Run injects them through --set-secrets.
ensure_secret() {
  local secret=$1 file=$2 what=$3
  describe_or_create \
    gcloud secrets describe "$secret" --project="$PROJECT" -- \
    gcloud secrets create "$secret" --replication-policy=automatic --project="$PROJECT" --quiet
  if [[ -n $file ]]; then
    if [[ $file != "-" ]]; then
      [[ -s $file ]] || die "$what file $file is missing or empty"
      # The services compare the key byte for byte and parse the URI whole: a trailing newline
      # would lock every client out (key) or name a host that does not exist (URI).
      if [[ -z $(tail -c 1 "$file") ]]; then
        die "$file ends with a newline; write it with: printf '%s' VALUE > $file   (or: openssl rand -hex 32 | tr -d '\\n' > $file)"
      fi
    fi
    run gcloud secrets versions add "$secret" --data-file="$file" --project="$PROJECT" --quiet
  else
    local check=(gcloud secrets versions list "$secret" --filter=state:enabled --limit=1
      --format=value\(name\) --project="$PROJECT")
    if [[ $DRY_RUN == true ]]; then
      print_cmd "${check[@]}"
    elif [[ -z $("${check[@]}") ]]; then
      die "secret $secret has no enabled version: run again with --${what}-file FILE"
    fi
  fi
  run gcloud secrets add-iam-policy-binding "$secret" \
    --member="serviceAccount:$SERVICE_ACCOUNT" --role=roles/secretmanager.secretAccessor \
    --project="$PROJECT" --quiet
}

ensure_api_key_secret() {
  [[ -n $API_KEY_SECRET ]] || { log "API_KEY_SECRET is empty: deploying without an API key"; return 0; }
  ensure_secret "$API_KEY_SECRET" "$API_KEY_FILE" api-key
}

# The Redis URI (with its password) for shared rate-limit counters and job records.
ensure_redis_secret() {
  if [[ -z $REDIS_URI_SECRET ]]; then
    [[ -z $REDIS_URI_FILE ]] || die "--redis-uri-file needs REDIS_URI_SECRET (the secret's name) in deploy.env"
    return 0
  fi
  if [[ -n $REDIS_URI_FILE && $REDIS_URI_FILE != "-" && -s $REDIS_URI_FILE ]]; then
    local uri
    uri=$(cat "$REDIS_URI_FILE")
    [[ $uri =~ ^(redis|rediss|redis\+[a-z]+|valkey|valkeys)://. ]] || die "$REDIS_URI_FILE: expected redis://[:PASSWORD@]HOST:PORT (or rediss://, redis+sentinel://, ...), got $(mask_uri "$uri")"
    log "Redis URI for secret $REDIS_URI_SECRET: $(mask_uri "$uri")"
  fi
  ensure_secret "$REDIS_URI_SECRET" "$REDIS_URI_FILE" redis-uri
}

ensure_callback_secret() {
  [[ -z $CALLBACK_SECRET_NAME ]] || ensure_secret "$CALLBACK_SECRET_NAME" "" callback-secret
}

# --set-secrets value: ENV=SECRET:latest for each configured secret, comma-separated.
service_secrets() {
  local pairs=()
  [[ -z $API_KEY_SECRET ]] || pairs+=("API_KEY=$API_KEY_SECRET:latest")
  [[ -z $REDIS_URI_SECRET ]] || pairs+=("RATE_LIMIT_STORAGE_URI=$REDIS_URI_SECRET:latest")
  [[ -z $REDIS_URI_SECRET || -n $JOB_STORE_BUCKET ]] || pairs+=("JOB_STORE_URI=$REDIS_URI_SECRET:latest")
  [[ -z $CALLBACK_SECRET_NAME ]] || pairs+=("CALLBACK_SECRET=$CALLBACK_SECRET_NAME:latest")
  local joined="" pair
  for pair in ${pairs[@]+"${pairs[@]}"}; do joined+="${joined:+,}$pair"; done
  printf '%s' "$joined"
}

# vpc_flags [with-redis]: Direct VPC egress by default, a connector when VPC_CONNECTOR is set.
# Services need it whenever Redis is configured (Memorystore has only a private address); jobs,
# which do not use Redis, only when a network is named.
vpc_flags() {
  local redis=""
  [[ ${1:-} != with-redis ]] || redis=$REDIS_URI_SECRET
  [[ -n $redis || -n $VPC_NETWORK || -n $VPC_SUBNET || -n $VPC_CONNECTOR ]] || return 0
  case $VPC_EGRESS in
    private-ranges-only | all-traffic) ;;
    *) die "VPC_EGRESS must be private-ranges-only or all-traffic, not $VPC_EGRESS" ;;
  esac
  if [[ -n $VPC_CONNECTOR ]]; then
    printf '%s\n' "--vpc-connector=$VPC_CONNECTOR" "--vpc-egress=$VPC_EGRESS"
  else
    printf '%s\n' "--network=${VPC_NETWORK:-default}" "--subnet=${VPC_SUBNET:-${VPC_NETWORK:-default}}" \
      "--vpc-egress=$VPC_EGRESS"
  fi
}

# The base image pinned by digest in requirements/base-images.lock (BASE_REF); refuses a tag-only
# entry unless --allow-unpinned-base. Checked before anything is created.
resolve_base_image() {
  local ref lock=${BASE_IMAGES_LOCK:-requirements/base-images.lock}
  [[ -r $lock ]] || die "cannot read $lock"
  ref=$(sed -n 's/^CUDA_BASE_IMAGE=//p' "$lock")
  [[ -n $ref ]] || die "$lock has no CUDA_BASE_IMAGE"
  if [[ ! $ref =~ @sha256:[0-9a-f]{64}$ ]]; then
    [[ $ALLOW_UNPINNED_BASE == true ]] || die "base image $ref is not pinned by digest: run scripts/pin-base-images.sh (needs registry access) and commit requirements/base-images.lock, or pass --allow-unpinned-base"
    log "warning: building from $ref by tag, not pinned by digest (--allow-unpinned-base)"
  fi
  refuse_stand_in "$ref"
  BASE_REF=$ref
}

# A local stand-in for a base image (scripts/build-standins.sh, for builds on a machine without a
# registry) is stored under the real image's name and labelled template.stand-in=true. A pin that
# resolves to one would ship an image nobody published: refused.
refuse_stand_in() {
  local ref=$1 found
  [[ $ref == *@sha256:* ]] && command -v buildah >/dev/null || return 0
  found=$(STORAGE_DRIVER=${STORAGE_DRIVER:-overlay} buildah inspect --type image --format \
    '{{index .OCIv1.Config.Labels "template.stand-in"}} {{.FromImageDigest}}' "${ref%@*}" 2>/dev/null) || return 0
  [[ $found != "true ${ref##*@}" ]] \
    || die "base image $ref is a local stand-in (scripts/build-standins.sh), not the published image; never deploy it: pin the real one with scripts/pin-base-images.sh"
}

build_image() {
  local svc=$1 config subs
  [[ -n $BASE_REF ]] || resolve_base_image
  subs="_REGION=$REGION,_REPO=$AR_REPO,_IMAGE=$(cfg "$svc" IMAGE),_TAG=$IMAGE_TAG,_BASE_IMAGE=$BASE_REF"
  case $svc in
    clip)
      config=cloudbuild_clip.yaml
      subs+=",_CLIP_MODEL=$CLIP_MODEL,_CLIP_PRETRAINED=$CLIP_PRETRAINED" ;;
    worker)
      config=cloudbuild_slim.yaml
      subs+=",_WHISPER_MODEL=$WHISPER_MODEL" ;;
  esac
  run gcloud builds submit --config="$config" --substitutions="$subs" --project="$PROJECT" --quiet .
}

# The non-secret settings. PORT is not here: Cloud Run reserves it and sets it from --port.
service_env() {
  local svc=$1 pairs=()
  pairs+=("MODELS_DIR=/models" "HF_HUB_OFFLINE=1"
    "WEB_THREADS=$(cfg "$svc" WEB_THREADS)" "MAX_BATCH_SIZE=$(cfg "$svc" MAX_BATCH_SIZE)"
    "MAX_WAIT_MS=$(cfg "$svc" MAX_WAIT_MS)" "MAX_REQUEST_MB=$MAX_REQUEST_MB")
  case $svc in
    clip) pairs+=("CLIP_MODEL=$CLIP_MODEL" "CLIP_PRETRAINED=$CLIP_PRETRAINED") ;;
    worker) pairs+=("WHISPER_MODEL=$WHISPER_MODEL" "WHISPER_DEVICE=$WHISPER_DEVICE"
      "WHISPER_COMPUTE_TYPE=$WHISPER_COMPUTE_TYPE") ;;
  esac
  [[ -z $RATE_LIMIT ]] || pairs+=("RATE_LIMIT=$RATE_LIMIT")
  [[ -z $RATE_LIMIT_STORAGE_URI ]] || pairs+=("RATE_LIMIT_STORAGE_URI=$RATE_LIMIT_STORAGE_URI")
  local events_output
  events_output=$(cfg "$svc" EVENTS_OUTPUT)
  [[ -z $events_output ]] || pairs+=("EVENTS_OUTPUT=$events_output")
  [[ -z $JOB_STORE_BUCKET ]] || pairs+=("JOB_STORE_URI=gs://$JOB_STORE_BUCKET/jobs/$(cfg "$svc" SERVICE)")
  local extra
  for extra in $EXTRA_ENV_VARS; do pairs+=("$extra"); done
  join_env ${pairs[@]+"${pairs[@]}"}
}

# join_env KEY=VALUE...: one --set-env-vars value; refuses secrets as plain variables.
join_env() {
  local pairs=("$@") joined="" pair delim=","
  for pair in "${pairs[@]}"; do
    [[ $pair != API_KEY=* ]] || die "API_KEY must not be a plain env var; it comes from Secret Manager"
    [[ $pair != CALLBACK_SECRET=* ]] || die "CALLBACK_SECRET must not be a plain env var; set CALLBACK_SECRET_NAME"
    # memory:// holds no password; anything else (redis://:PASSWORD@...) goes through Secret Manager.
    if [[ $pair == RATE_LIMIT_STORAGE_URI=* && $pair != RATE_LIMIT_STORAGE_URI=memory://* ]]; then
      die "RATE_LIMIT_STORAGE_URI must not be a plain env var ($(mask_uri "${pair#*=}")): set REDIS_URI_SECRET and pass --redis-uri-file FILE"
    fi
    if [[ $pair == JOB_STORE_URI=redis* ]]; then
      die "JOB_STORE_URI must not be a Redis URI in a plain env var ($(mask_uri "${pair#*=}")): set REDIS_URI_SECRET"
    fi
    [[ $pair != *,* ]] || delim="@@"
  done
  for pair in "${pairs[@]}"; do joined+="${joined:+$delim}$pair"; done
  # gcloud's ^DELIM^ syntax, only when a value itself contains a comma.
  if [[ $delim == "@@" ]]; then joined="^@@^$joined"; fi
  printf '%s' "$joined"
}

check_probe() {
  local budget=$((STARTUP_PROBE_PERIOD_S * STARTUP_PROBE_FAILURE_THRESHOLD))
  ((budget <= 240)) || die "startup probe budget ${budget}s > 240s (period x failureThreshold)"
  ((STARTUP_PROBE_TIMEOUT_S <= STARTUP_PROBE_PERIOD_S)) || die "probe timeout must be <= its period"
  ((LIVENESS_PROBE_TIMEOUT_S <= LIVENESS_PROBE_PERIOD_S)) || die "liveness probe timeout must be <= its period"
}

deploy_service() {
  local svc=$1 name port threads batch envs
  name=$(cfg "$svc" SERVICE)
  envs=$(service_env "$svc")
  port=$(cfg "$svc" PORT)
  threads=$(cfg "$svc" WEB_THREADS)
  batch=$(cfg "$svc" MAX_BATCH_SIZE)
  [[ ! $batch =~ ^[0-9]+$ ]] || ((threads >= batch)) || log "warning: $svc WEB_THREADS=$threads < MAX_BATCH_SIZE=$batch: single-item requests can never fill a batch"
  local args=(gcloud run deploy "$name" --image="$(image_ref "$svc")"
    --project="$PROJECT" --region="$REGION"
    --port="$port" --cpu="$(cfg "$svc" CPU)" --memory="$(cfg "$svc" MEMORY)"
    --gpu=1 --gpu-type=nvidia-l4)
  if [[ $GPU_ZONAL_REDUNDANCY == true ]]; then
    args+=(--gpu-zonal-redundancy)
  else
    args+=(--no-gpu-zonal-redundancy)
  fi
  # Concurrency = gunicorn threads: Cloud Run sends no more requests than the instance can take
  # at once, and enough of them for the batcher to fill batches.
  args+=(--no-cpu-throttling
    --concurrency="$threads"
    --min-instances="$(cfg "$svc" MIN_INSTANCES)" --max-instances="$(cfg "$svc" MAX_INSTANCES)"
    --timeout="$(cfg "$svc" TIMEOUT)"
    --startup-probe="httpGet.path=/health,httpGet.port=$port,initialDelaySeconds=0,timeoutSeconds=$STARTUP_PROBE_TIMEOUT_S,periodSeconds=$STARTUP_PROBE_PERIOD_S,failureThreshold=$STARTUP_PROBE_FAILURE_THRESHOLD")
  # The liveness probe starts once the startup probe has passed; a wedged instance is replaced.
  if [[ -n $LIVENESS_PROBE_PATH ]]; then
    args+=(--liveness-probe="httpGet.path=$LIVENESS_PROBE_PATH,httpGet.port=$port,timeoutSeconds=$LIVENESS_PROBE_TIMEOUT_S,periodSeconds=$LIVENESS_PROBE_PERIOD_S,failureThreshold=$LIVENESS_PROBE_FAILURE_THRESHOLD")
  fi
  args+=(--service-account="$SERVICE_ACCOUNT"
    --set-env-vars="$envs"
    --labels="app=gpu-inference,component=$svc")
  local secrets vpc flag
  secrets=$(service_secrets)
  if [[ -n $secrets ]]; then
    args+=(--set-secrets="$secrets")
  else
    args+=(--clear-secrets)
  fi
  vpc=$(vpc_flags with-redis)
  for flag in $vpc; do args+=("$flag"); done
  if [[ $ALLOW_UNAUTHENTICATED == true ]]; then
    args+=(--allow-unauthenticated)
  else
    args+=(--no-allow-unauthenticated)
  fi
  if [[ $NO_TRAFFIC == true ]]; then
    args+=(--no-traffic --tag="$TRAFFIC_TAG")
  fi
  run "${args[@]}" --quiet
  if [[ $NO_TRAFFIC != true ]]; then
    # A rollback or split pins traffic to revisions; a normal deploy means "serve the new one".
    run gcloud run services update-traffic "$name" --to-latest \
      --project="$PROJECT" --region="$REGION" --quiet
  fi
  announce_url "$svc"
}

service_url() {
  run gcloud run services describe "$(cfg "$1" SERVICE)" --project="$PROJECT" --region="$REGION" \
    --format=value\(status.url\)
}

announce_url() {
  local svc=$1 url=https://SERVICE-URL var
  if [[ $DRY_RUN == true ]]; then
    service_url "$svc"
  else
    url=$(service_url "$svc")
    printf '%s\n' "$url"
  fi
  case $svc in clip) var=CLIP_SERVER_URL ;; worker) var=WHISPER_WORKER_URL ;; esac
  if [[ $DRY_RUN == true ]]; then
    log "(dry run) $svc would be served at the URL the describe command prints"
  elif [[ $NO_TRAFFIC == true ]]; then
    # Cloud Run serves a tagged revision at https://TAG---HOST of the service URL.
    log "$svc: new revision deployed without traffic; test it at ${url/https:\/\//https://$TRAFFIC_TAG---}"
    log "  then: ./deploy-cloudrun.sh traffic $svc $TRAFFIC_TAG=10   and later   promote $svc"
  else
    log "$svc is live at $url"
  fi
  log "  Vercel backend: vercel env add $var production   (value: $url)"
  if [[ -n $API_KEY_SECRET ]]; then
    log "  API key:        gcloud secrets versions access latest --secret=$API_KEY_SECRET --project=$PROJECT | vercel env add ${var%_URL}_API_KEY production"
  fi
}

cmd_deploy() {
  require_target
  check_probe
  local targets svc
  targets=$(expand_targets "${1:-all}")  # assigned first: set -e then stops on a bad name
  if [[ $SKIP_BUILD != true ]]; then
    resolve_base_image
    enable_apis
    ensure_registry
  fi
  ensure_service_account
  # Job records are rewritten as a job moves on (queued, running, succeeded): objectUser, on that bucket only.
  [[ -z $JOB_STORE_BUCKET ]] || grant_buckets "$SERVICE_ACCOUNT" "" "gs://$JOB_STORE_BUCKET" roles/storage.objectUser
  ensure_api_key_secret
  ensure_redis_secret
  ensure_callback_secret
  for svc in $targets; do
    [[ $SKIP_BUILD == true ]] || build_image "$svc"
    deploy_service "$svc"
  done
}

cmd_build() {
  require_target
  resolve_base_image
  enable_apis
  ensure_registry
  local targets svc
  targets=$(expand_targets "${1:-all}")
  for svc in $targets; do build_image "$svc"; done
}

cmd_status() {
  require_target
  local targets svc name
  targets=$(expand_targets "${1:-all}")
  for svc in $targets; do
    name=$(cfg "$svc" SERVICE)
    run gcloud run services describe "$name" --project="$PROJECT" --region="$REGION"
    run gcloud run revisions list --service="$name" --project="$PROJECT" --region="$REGION" --limit=10
  done
}

cmd_url() {
  require_target
  local svc
  svc=$(service_key "${1:-clip}")
  service_url "$svc"
}

cmd_logs() {
  require_target
  [[ $# -ge 1 ]] || die "usage: logs SERVICE"
  local name
  name=$(service_name "$1")
  run gcloud run services logs read "$name" --project="$PROJECT" --region="$REGION" --limit=100
}

cmd_traffic() {
  require_target
  [[ $# -eq 2 ]] || die "usage: traffic SERVICE TAG=PERCENT[,TAG=PERCENT...]"
  local name
  name=$(service_name "$1")
  run gcloud run services update-traffic "$name" --to-tags="$2" \
    --project="$PROJECT" --region="$REGION" --quiet
}

cmd_promote() {
  require_target
  [[ $# -eq 1 ]] || die "usage: promote SERVICE"
  local name
  name=$(service_name "$1")
  run gcloud run services update-traffic "$name" --to-latest \
    --project="$PROJECT" --region="$REGION" --quiet
}

cmd_rollback() {
  require_target
  [[ $# -eq 2 ]] || die "usage: rollback SERVICE REVISION   (list them: ./deploy-cloudrun.sh status SERVICE)"
  local name
  name=$(service_name "$1")
  run gcloud run services update-traffic "$name" --to-revisions="$2=100" \
    --project="$PROJECT" --region="$REGION" --quiet
}

cmd_delete() {
  require_target
  local targets svc names=()
  targets=$(expand_targets "${1:-all}")
  for svc in $targets; do names+=("$(cfg "$svc" SERVICE)"); done
  if [[ $DRY_RUN != true && $ASSUME_YES != true ]]; then
    local answer
    read -r -p "Delete ${names[*]} in $PROJECT/$REGION? [y/N] " answer
    [[ $answer == [yY]* ]] || die "not deleted"
  fi
  local name
  for name in "${names[@]}"; do
    run gcloud run services delete "$name" --project="$PROJECT" --region="$REGION" --quiet
  done
  log "Images stay in $REGION-docker.pkg.dev/$PROJECT/$AR_REPO and the key in secret $API_KEY_SECRET;"
  log "see docs/deploy.md (7. Delete) to remove those too."
}

# ---------------------------------------------------------------------------------------------
# Lookups, identities and bucket access shared by jobs and triggers

# capture_into VAR PLACEHOLDER CMD...: VAR = CMD's output; a dry run prints CMD and uses PLACEHOLDER.
capture_into() {
  local var=$1 placeholder=$2 value
  shift 2
  if [[ $DRY_RUN == true ]]; then
    print_cmd "$@"
    value=$placeholder
  else
    log "+ $(print_cmd "$@")"
    value=$("$@")
  fi
  printf -v "$var" '%s' "$value"
}

# ensure_sa VAR NAME DISPLAY: VAR (an email) unless set, else NAME@PROJECT, created when missing.
ensure_sa() {
  local var=$1 name=$2 display=$3
  if [[ -n ${!var} ]]; then return 0; fi
  printf -v "$var" '%s' "$name@$PROJECT.iam.gserviceaccount.com"
  describe_or_create \
    gcloud iam service-accounts describe "${!var}" --project="$PROJECT" -- \
    gcloud iam service-accounts create "$name" --display-name="$display" --project="$PROJECT" --quiet
}

# bucket_of gs://BUCKET/prefix -> BUCKET (empty for local paths).
bucket_of() {
  case $1 in
    gs://*) local rest=${1#gs://}; printf '%s' "${rest%%/*}" ;;
  esac
}

# grant_buckets SA INPUT OUTPUT WRITE_ROLES: read on the input's bucket, WRITE_ROLES (space-separated)
# on the output's, nothing else and nowhere else.
grant_buckets() {
  local sa=$1 input_bucket output_bucket role
  input_bucket=$(bucket_of "$2")
  output_bucket=$(bucket_of "$3")
  if [[ -n $input_bucket ]]; then
    run gcloud storage buckets add-iam-policy-binding "gs://$input_bucket" --member="serviceAccount:$sa" \
      --role=roles/storage.objectViewer --project="$PROJECT" --quiet
  fi
  if [[ -n $output_bucket ]]; then
    for role in $4; do
      [[ $role != roles/storage.objectViewer || -z $input_bucket || $input_bucket != "$output_bucket" ]] || continue
      run gcloud storage buckets add-iam-policy-binding "gs://$output_bucket" --member="serviceAccount:$sa" \
        --role="$role" --project="$PROJECT" --quiet
    done
  fi
}

# ---------------------------------------------------------------------------------------------
# Batch jobs (Cloud Run Jobs): python -m server.job / worker.job in the services' images

job_package() {
  case $1 in clip) echo server ;; worker) echo worker ;; esac
}

# Cloud Run GPU jobs exist only in gcloud's beta track (528); CPU jobs use the GA commands.
job_gcloud() {
  if [[ $(cfg "$1" JOB_GPU) == 1 ]]; then printf '%s\n' gcloud beta; else printf '%s\n' gcloud; fi
}

job_deploy() {
  local svc=$1 name input output gpu tasks parallelism
  name=$(cfg "$svc" JOB)
  input=${JOB_INPUT_ARG:-$(cfg "$svc" JOB_INPUT)}
  output=${JOB_OUTPUT_ARG:-$(cfg "$svc" JOB_OUTPUT)}
  gpu=$(cfg "$svc" JOB_GPU)
  tasks=${JOB_TASKS_ARG:-$(cfg "$svc" JOB_TASKS)}
  parallelism=${JOB_PARALLELISM_ARG:-$(cfg "$svc" JOB_PARALLELISM)}
  [[ $tasks =~ ^[1-9][0-9]*$ && $parallelism =~ ^[0-9]+$ ]] || die "job: --tasks must be >= 1 and --parallelism >= 0"
  ((parallelism <= tasks)) || die "job: parallelism $parallelism > tasks $tasks"
  if [[ $SKIP_BUILD != true ]]; then
    resolve_base_image
    enable_apis
    ensure_registry
  fi
  ensure_sa JOB_SERVICE_ACCOUNT "$JOB_SA_NAME" "Cloud Run GPU inference jobs"
  # objectUser on the output: a retried task rewrites its failures file, and overwriting needs delete.
  grant_buckets "$JOB_SERVICE_ACCOUNT" "$input" "$output" roles/storage.objectUser
  [[ $SKIP_BUILD == true ]] || build_image "$svc"
  local pairs=("MODELS_DIR=/models" "HF_HUB_OFFLINE=1" "MAX_BATCH_SIZE=$(cfg "$svc" MAX_BATCH_SIZE)")
  case $svc in
    clip) pairs+=("CLIP_MODEL=$CLIP_MODEL" "CLIP_PRETRAINED=$CLIP_PRETRAINED") ;;
    worker) pairs+=("WHISPER_MODEL=$WHISPER_MODEL" "WHISPER_DEVICE=$WHISPER_DEVICE"
      "WHISPER_COMPUTE_TYPE=$WHISPER_COMPUTE_TYPE") ;;
  esac
  [[ -z $input ]] || pairs+=("JOB_INPUT=$input")
  [[ -z $output ]] || pairs+=("JOB_OUTPUT=$output")
  local envs track
  envs=$(join_env "${pairs[@]}")
  track=$(job_gcloud "$svc")
  # shellcheck disable=SC2206  # "gcloud" or "gcloud beta": split on purpose
  local args=($track run jobs deploy "$name" --image="$(image_ref "$svc")"
    --project="$PROJECT" --region="$REGION"
    --command=python --args="-m,$(job_package "$svc").job"
    --tasks="$tasks" --parallelism="$parallelism"
    --max-retries="$(cfg "$svc" JOB_MAX_RETRIES)" --task-timeout="$(cfg "$svc" JOB_TASK_TIMEOUT)"
    --cpu="$(cfg "$svc" JOB_CPU)" --memory="$(cfg "$svc" JOB_MEMORY)")
  [[ $gpu != 1 ]] || args+=(--gpu=1 --gpu-type=nvidia-l4)
  args+=(--service-account="$JOB_SERVICE_ACCOUNT" --set-env-vars="$envs"
    --labels="app=gpu-inference,component=$svc-job")
  local vpc flag
  vpc=$(vpc_flags)
  for flag in $vpc; do args+=("$flag"); done
  run "${args[@]}" --quiet
  log "job $name deployed; run it: ./deploy-cloudrun.sh job $svc execute --input gs://BUCKET/in/ --output gs://BUCKET/out/"
}

job_execute() {
  local svc=$1 name track
  name=$(cfg "$svc" JOB)
  track=$(job_gcloud "$svc")
  # shellcheck disable=SC2206  # "gcloud" or "gcloud beta": split on purpose
  local args=($track run jobs execute "$name" --project="$PROJECT" --region="$REGION")
  [[ -z $JOB_TASKS_ARG ]] || args+=(--tasks="$JOB_TASKS_ARG")
  local pairs=()
  [[ -z $JOB_INPUT_ARG ]] || pairs+=("JOB_INPUT=$JOB_INPUT_ARG")
  [[ -z $JOB_OUTPUT_ARG ]] || pairs+=("JOB_OUTPUT=$JOB_OUTPUT_ARG")
  if [[ ${#pairs[@]} -gt 0 ]]; then
    # Overrides for this execution only; the job's service account must already reach these buckets.
    args+=(--update-env-vars="$(join_env "${pairs[@]}")")
  fi
  [[ $JOB_WAIT != true ]] || args+=(--wait)
  run "${args[@]}" --quiet
}

cmd_job() {
  require_target
  [[ $# -eq 2 ]] || die "usage: job clip|worker deploy|execute|status|logs"
  local svc name track
  svc=$(service_key "$1")
  name=$(cfg "$svc" JOB)
  track=$(job_gcloud "$svc")
  case $2 in
    deploy) job_deploy "$svc" ;;
    execute) job_execute "$svc" ;;
    status)
      # shellcheck disable=SC2086  # "gcloud" or "gcloud beta": split on purpose
      run $track run jobs describe "$name" --project="$PROJECT" --region="$REGION"
      # shellcheck disable=SC2086
      run $track run jobs executions list --job="$name" --project="$PROJECT" --region="$REGION" --limit=10 ;;
    logs)
      run gcloud logging read "resource.type=\"cloud_run_job\" AND resource.labels.job_name=\"$name\"" \
        --project="$PROJECT" --limit=100 --freshness=1d --format="value(timestamp,severity,textPayload)" ;;
    *) die "job: unknown action $2 (deploy, execute, status, logs)" ;;
  esac
}

# ---------------------------------------------------------------------------------------------
# Event sources: Pub/Sub push, Cloud Storage notifications, Eventarc, Cloud Tasks

# The project number names the Google-managed service agents (Pub/Sub, Cloud Storage).
project_number() {
  capture_into PROJECT_NUMBER PROJECT_NUMBER \
    gcloud projects describe "$PROJECT" --format=value\(projectNumber\) --project="$PROJECT"
}

# The invoker identity may call this one service and nothing else.
ensure_invoker() {
  local name=$1
  ensure_sa INVOKER_SERVICE_ACCOUNT "$INVOKER_SA_NAME" "Invokes GPU inference services (Pub/Sub, Eventarc, Cloud Tasks)"
  run gcloud run services add-iam-policy-binding "$name" --member="serviceAccount:$INVOKER_SERVICE_ACCOUNT" \
    --role=roles/run.invoker --project="$PROJECT" --region="$REGION" --quiet
}

triggers_pubsub() {
  local svc=$1 name=$2 url=$3 bucket prefix topic dead sub pubsub_agent
  bucket=$(cfg "$svc" EVENTS_BUCKET)
  prefix=$(cfg "$svc" EVENTS_PREFIX)
  topic="$name-events" dead="$name-events-dead-letter" sub="$name-events-push"
  pubsub_agent="service-$PROJECT_NUMBER@gcp-sa-pubsub.iam.gserviceaccount.com"
  local t
  for t in "$topic" "$dead"; do
    describe_or_create gcloud pubsub topics describe "$t" --project="$PROJECT" -- \
      gcloud pubsub topics create "$t" --labels=app=gpu-inference --project="$PROJECT" --quiet
  done
  # A topic without a subscription drops what it receives: keep dead letters for a week.
  describe_or_create gcloud pubsub subscriptions describe "$dead-sub" --project="$PROJECT" -- \
    gcloud pubsub subscriptions create "$dead-sub" --topic="$dead" --message-retention-duration=7d \
    --labels=app=gpu-inference --project="$PROJECT" --quiet
  # A push cannot add headers (its Authorization carries the OIDC token): with an API key, the
  # service takes it as ?token= on /events/ routes.
  local endpoint="$url/events/pubsub"
  [[ -z $TRIGGER_KEY ]] || endpoint+="?token=$TRIGGER_KEY"
  local settings=(--push-endpoint="$endpoint" --push-auth-service-account="$INVOKER_SERVICE_ACCOUNT"
    --ack-deadline="$PUBSUB_ACK_DEADLINE_S" --min-retry-delay=10s --max-retry-delay=600s
    --dead-letter-topic="$dead" --max-delivery-attempts="$PUBSUB_MAX_DELIVERY_ATTEMPTS")
  describe_create_or_update gcloud pubsub subscriptions describe "$sub" --project="$PROJECT" -- \
    gcloud pubsub subscriptions create "$sub" --topic="$topic" "${settings[@]}" \
    --labels=app=gpu-inference --project="$PROJECT" --quiet -- \
    gcloud pubsub subscriptions update "$sub" "${settings[@]}" --project="$PROJECT" --quiet
  # Pub/Sub's own agent signs the OIDC tokens and moves messages to the dead-letter topic.
  run gcloud iam service-accounts add-iam-policy-binding "$INVOKER_SERVICE_ACCOUNT" \
    --member="serviceAccount:$pubsub_agent" --role=roles/iam.serviceAccountTokenCreator \
    --project="$PROJECT" --quiet
  run gcloud pubsub topics add-iam-policy-binding "$dead" --member="serviceAccount:$pubsub_agent" \
    --role=roles/pubsub.publisher --project="$PROJECT" --quiet
  run gcloud pubsub subscriptions add-iam-policy-binding "$sub" --member="serviceAccount:$pubsub_agent" \
    --role=roles/pubsub.subscriber --project="$PROJECT" --quiet
  if [[ -z $bucket ]]; then
    log "$svc: $(printf '%s' "$svc" | tr '[:lower:]' '[:upper:]')_EVENTS_BUCKET is empty: no Cloud Storage notification (publish JSON jobs to $topic)"
    return 0
  fi
  local notify=(gcloud storage buckets notifications create "gs://$bucket" --topic="projects/$PROJECT/topics/$topic"
    --event-types=OBJECT_FINALIZE --payload-format=json)
  [[ -z $prefix ]] || notify+=(--object-prefix="$prefix")
  notify+=(--project="$PROJECT" --quiet)
  # Notifications have no name to describe: list the bucket's and look for this topic.
  local existing
  capture_into existing "" gcloud storage buckets notifications list "gs://$bucket" \
    --format=value\(topic\) --project="$PROJECT"
  if [[ $DRY_RUN != true && $'\n'$existing$'\n' == *"/topics/$topic"$'\n'* ]]; then
    log "exists: notification of gs://$bucket to $topic"
  else
    run "${notify[@]}"
  fi
}

triggers_eventarc() {
  local svc=$1 name=$2 bucket gcs_agent
  bucket=$(cfg "$svc" EVENTS_BUCKET)
  [[ -n $bucket ]] || die "eventarc needs $(printf '%s' "$svc" | tr '[:lower:]' '[:upper:]')_EVENTS_BUCKET (a bucket in $REGION)"
  gcs_agent="service-$PROJECT_NUMBER@gs-project-accounts.iam.gserviceaccount.com"
  # Project-level by necessity: Eventarc has no narrower scope for these two roles.
  run gcloud projects add-iam-policy-binding "$PROJECT" --member="serviceAccount:$INVOKER_SERVICE_ACCOUNT" \
    --role=roles/eventarc.eventReceiver --condition=None --project="$PROJECT" --quiet
  run gcloud projects add-iam-policy-binding "$PROJECT" --member="serviceAccount:$gcs_agent" \
    --role=roles/pubsub.publisher --condition=None --project="$PROJECT" --quiet
  describe_or_create \
    gcloud eventarc triggers describe "$name-storage-finalized" --location="$REGION" --project="$PROJECT" -- \
    gcloud eventarc triggers create "$name-storage-finalized" --location="$REGION" \
    --destination-run-service="$name" --destination-run-region="$REGION" \
    --destination-run-path=/events/storage \
    --event-filters=type=google.cloud.storage.object.v1.finalized --event-filters="bucket=$bucket" \
    --service-account="$INVOKER_SERVICE_ACCOUNT" --labels=app=gpu-inference --project="$PROJECT" --quiet
}

triggers_tasks() {
  local name=$1 url=$2
  # Tasks carry an OIDC token of the invoker identity and the API key (queue-wide overrides), so
  # whoever enqueues needs only roles/cloudtasks.enqueuer, neither access to the service nor the key.
  local settings=(--max-dispatches-per-second="$TASKS_MAX_DISPATCHES_PER_SECOND"
    --max-concurrent-dispatches="$TASKS_MAX_CONCURRENT_DISPATCHES"
    --max-attempts="$TASKS_MAX_ATTEMPTS" --min-backoff=10s --max-backoff=300s
    --http-oidc-service-account-email-override="$INVOKER_SERVICE_ACCOUNT"
    --http-oidc-token-audience-override="$url")
  [[ -z $TRIGGER_KEY ]] || settings+=(--http-header-override="X-API-Key: $TRIGGER_KEY")
  describe_create_or_update \
    gcloud tasks queues describe "$name-tasks" --location="$REGION" --project="$PROJECT" -- \
    gcloud tasks queues create "$name-tasks" --location="$REGION" "${settings[@]}" --project="$PROJECT" --quiet -- \
    gcloud tasks queues update "$name-tasks" --location="$REGION" "${settings[@]}" --project="$PROJECT" --quiet
}

cmd_triggers() {
  require_target
  [[ $# -ge 1 ]] || die "usage: triggers clip|worker [pubsub] [eventarc] [tasks]"
  local svc name kinds=() kind apis=()
  svc=$(service_key "$1")
  name=$(cfg "$svc" SERVICE)
  shift
  if [[ $# -gt 0 ]]; then kinds=("$@"); else kinds=(pubsub tasks); fi
  for kind in "${kinds[@]}"; do
    case $kind in
      pubsub) apis+=(pubsub.googleapis.com storage.googleapis.com) ;;
      eventarc) apis+=(eventarc.googleapis.com pubsub.googleapis.com storage.googleapis.com) ;;
      tasks) apis+=(cloudtasks.googleapis.com) ;;
      *) die "triggers: unknown kind $kind (pubsub, eventarc, tasks)" ;;
    esac
  done
  # Eventarc can send neither a header nor a query token: the service must not require the key.
  if [[ " ${kinds[*]} " == *" eventarc "* ]]; then
    [[ -z $API_KEY_SECRET ]] || die "eventarc cannot send the API key: use 'triggers $svc pubsub' (a storage notification), or deploy $name with API_KEY_SECRET= and ALLOW_UNAUTHENTICATED=false (IAM only)"
    [[ -n $(cfg "$svc" EVENTS_BUCKET) ]] || die "eventarc needs $(printf '%s' "$svc" | tr '[:lower:]' '[:upper:]')_EVENTS_BUCKET (a bucket in $REGION)"
  fi
  local api unique=()
  for api in "${apis[@]}"; do
    [[ " ${unique[*]-} " == *" $api "* ]] || unique+=("$api")
  done
  run gcloud services enable "${unique[@]}" --project="$PROJECT" --quiet
  [[ -n $SERVICE_ACCOUNT ]] || SERVICE_ACCOUNT="$RUN_SA_NAME@$PROJECT.iam.gserviceaccount.com"
  # The service reads the uploads and writes results create-only (a redelivered event finds its
  # result and keeps it): viewer on the uploads, creator + viewer on the results, nothing more.
  grant_buckets "$SERVICE_ACCOUNT" "gs://$(cfg "$svc" EVENTS_BUCKET)" "$(cfg "$svc" EVENTS_OUTPUT)" \
    "roles/storage.objectCreator roles/storage.objectViewer"
  ensure_invoker "$name"
  local url
  capture_into url https://SERVICE-URL gcloud run services describe "$name" --project="$PROJECT" \
    --region="$REGION" --format=value\(status.url\)
  [[ -n $url ]] || die "service $name has no URL: deploy it first"
  # With an API key the pushes must carry it; read from Secret Manager, never printed (***).
  TRIGGER_KEY=""
  if [[ -n $API_KEY_SECRET ]]; then
    capture_into TRIGGER_KEY API_KEY gcloud secrets versions access latest --secret="$API_KEY_SECRET" \
      --project="$PROJECT"
    [[ -n $TRIGGER_KEY ]] || die "secret $API_KEY_SECRET has no enabled version"
    [[ $DRY_RUN == true ]] || MASKED+=("$TRIGGER_KEY")
  fi
  PROJECT_NUMBER=""
  for kind in "${kinds[@]}"; do
    case $kind in
      pubsub | eventarc) [[ -n $PROJECT_NUMBER ]] || project_number ;;
    esac
    case $kind in
      pubsub) triggers_pubsub "$svc" "$name" "$url" ;;
      eventarc) triggers_eventarc "$svc" "$name" ;;
      tasks) triggers_tasks "$name" "$url" ;;
    esac
  done
}

# durable clip|worker: opt-in durable mode for callback_url jobs (docs/reliability.md). A topic
# SERVICE-jobs with an OIDC push subscription to /events/pubsub (redelivery until the job's result
# is stored, then a dead-letter topic kept 7 days), the IAM that needs, and JOB_TOPIC on the
# service. Needs JOB_STORE_BUCKET: every instance must reach the jobs' stored requests.
cmd_durable() {
  require_target
  [[ $# -eq 1 ]] || die "usage: durable clip|worker"
  local svc name topic dead sub url key="" endpoint pubsub_agent t
  svc=$(service_key "$1")
  name=$(cfg "$svc" SERVICE)
  [[ -n $JOB_STORE_BUCKET ]] || die "durable mode needs JOB_STORE_BUCKET (a gs:// job store every instance reaches); deploy with it first"
  topic="$name-jobs" dead="$name-jobs-dead-letter" sub="$name-jobs-push"
  run gcloud services enable pubsub.googleapis.com --project="$PROJECT" --quiet
  [[ -n $SERVICE_ACCOUNT ]] || SERVICE_ACCOUNT="$RUN_SA_NAME@$PROJECT.iam.gserviceaccount.com"
  ensure_invoker "$name"
  PROJECT_NUMBER=""
  project_number
  pubsub_agent="service-$PROJECT_NUMBER@gcp-sa-pubsub.iam.gserviceaccount.com"
  capture_into url https://SERVICE-URL gcloud run services describe "$name" --project="$PROJECT" \
    --region="$REGION" --format=value\(status.url\)
  [[ -n $url ]] || die "service $name has no URL: deploy it first"
  if [[ -n $API_KEY_SECRET ]]; then  # a push cannot add headers: the key goes as ?token=, never printed
    capture_into key API_KEY gcloud secrets versions access latest --secret="$API_KEY_SECRET" --project="$PROJECT"
    [[ -n $key ]] || die "secret $API_KEY_SECRET has no enabled version"
    [[ $DRY_RUN == true ]] || MASKED+=("$key")
  fi
  endpoint="$url/events/pubsub${key:+?token=$key}"
  for t in "$topic" "$dead"; do
    describe_or_create gcloud pubsub topics describe "$t" --project="$PROJECT" -- \
      gcloud pubsub topics create "$t" --labels=app=gpu-inference --project="$PROJECT" --quiet
  done
  describe_or_create gcloud pubsub subscriptions describe "$dead-sub" --project="$PROJECT" -- \
    gcloud pubsub subscriptions create "$dead-sub" --topic="$dead" --message-retention-duration=7d \
    --labels=app=gpu-inference --project="$PROJECT" --quiet
  # The service ends a job worker_lost after JOB_MAX_ATTEMPTS (3) deliveries; the dead letter
  # only takes what not even that could end. The push holds the job until its result is stored.
  local settings=(--push-endpoint="$endpoint" --push-auth-service-account="$INVOKER_SERVICE_ACCOUNT"
    --ack-deadline="$PUBSUB_ACK_DEADLINE_S" --min-retry-delay=10s --max-retry-delay=600s
    --dead-letter-topic="$dead" --max-delivery-attempts="$PUBSUB_MAX_DELIVERY_ATTEMPTS")
  describe_create_or_update gcloud pubsub subscriptions describe "$sub" --project="$PROJECT" -- \
    gcloud pubsub subscriptions create "$sub" --topic="$topic" "${settings[@]}" \
    --labels=app=gpu-inference --project="$PROJECT" --quiet -- \
    gcloud pubsub subscriptions update "$sub" "${settings[@]}" --project="$PROJECT" --quiet
  run gcloud pubsub topics add-iam-policy-binding "$topic" --member="serviceAccount:$SERVICE_ACCOUNT" \
    --role=roles/pubsub.publisher --project="$PROJECT" --quiet
  run gcloud iam service-accounts add-iam-policy-binding "$INVOKER_SERVICE_ACCOUNT" \
    --member="serviceAccount:$pubsub_agent" --role=roles/iam.serviceAccountTokenCreator --project="$PROJECT" --quiet
  run gcloud pubsub topics add-iam-policy-binding "$dead" --member="serviceAccount:$pubsub_agent" \
    --role=roles/pubsub.publisher --project="$PROJECT" --quiet
  run gcloud pubsub subscriptions add-iam-policy-binding "$sub" --member="serviceAccount:$pubsub_agent" \
    --role=roles/pubsub.subscriber --project="$PROJECT" --quiet
  run gcloud run services update "$name" --update-env-vars="JOB_TOPIC=projects/$PROJECT/topics/$topic" \
    --project="$PROJECT" --region="$REGION" --quiet
}

# ---------------------------------------------------------------------------------------------
# Alert policies: alerts/*.yaml (AlertPolicy resources of the Monitoring v3 API)

policy_display_name() {
  sed -n 's/^displayName: *//p' "$1" | head -n 1 | sed -e 's/^"\(.*\)"$/\1/' -e "s/^'\(.*\)'$/\1/"
}

# Alert policies have no user-chosen ID: find one by display name, update it, else create it.
# Policy commands exist only in gcloud's alpha track (528; beta has no `monitoring policies`).
cmd_alerts() {
  require_target
  local files=("$@") file display existing
  if [[ ${#files[@]} -eq 0 ]]; then files=(alerts/*.yaml); fi
  run gcloud services enable monitoring.googleapis.com --project="$PROJECT" --quiet
  for file in "${files[@]}"; do
    [[ -f $file ]] || die "alerts: no such policy file $file"
    display=$(policy_display_name "$file")
    [[ -n $display ]] || die "$file has no displayName"
    capture_into existing "" gcloud alpha monitoring policies list --filter="displayName=\"$display\"" \
      --format=value\(name\) --project="$PROJECT"
    existing=${existing%%$'\n'*}
    local channels=()
    [[ -z $ALERT_CHANNELS ]] || channels=(--notification-channels="$ALERT_CHANNELS")
    if [[ -n $existing ]]; then
      # An update replaces the whole policy: keep the channels it has unless ALERT_CHANNELS says otherwise.
      local keep=$ALERT_CHANNELS
      if [[ -z $keep ]]; then
        capture_into keep "" gcloud alpha monitoring policies describe "$existing" \
          --format='value(notificationChannels.join(","))' --project="$PROJECT"
      fi
      local set_channels=()
      [[ -z $keep ]] || set_channels=(--set-notification-channels="$keep")
      run gcloud alpha monitoring policies update "$existing" --policy-from-file="$file" \
        ${set_channels[@]+"${set_channels[@]}"} --project="$PROJECT" --quiet
    else
      run gcloud alpha monitoring policies create --policy-from-file="$file" \
        ${channels[@]+"${channels[@]}"} --project="$PROJECT" --quiet
    fi
  done
}

# ---------------------------------------------------------------------------------------------
# Cost: all arithmetic is in this one awk program.

memory_gib() {
  case $1 in
    *Gi) printf '%s' "${1%Gi}" ;;
    *Mi) awk -v m="${1%Mi}" 'BEGIN { printf "%g", m / 1024 }' ;;
    *) die "memory must end in Gi or Mi: $1" ;;
  esac
}

cmd_cost() {
  local svc
  svc=$(service_key "${1:-clip}")
  [[ -n $COST_REQUESTS && -n $COST_SECONDS ]] || die "cost needs --requests N --seconds S"
  local cpu=${COST_CPU:-$(cfg "$svc" CPU)} memory=${COST_MEMORY:-$(cfg "$svc" MEMORY)}
  local min_instances=${COST_MIN_INSTANCES:-$(cfg "$svc" MIN_INSTANCES)} gib number
  local max_instances
  max_instances=$(cfg "$svc" MAX_INSTANCES)
  for number in "$COST_REQUESTS" "$COST_SECONDS" "${COST_CONCURRENCY:-1}" "$cpu" "$min_instances"; do
    [[ $number =~ ^[0-9]+([.][0-9]+)?$ ]] || die "cost: '$number' is not a non-negative number"
  done
  gib=$(memory_gib "$memory")
  awk -v requests="$COST_REQUESTS" -v seconds="$COST_SECONDS" -v concurrency="${COST_CONCURRENCY:-1}" \
    -v cpu="$cpu" -v gib="$gib" -v min_instances="$min_instances" -v max_instances="$max_instances" \
    -v month="$SECONDS_PER_MONTH" -v p_cpu="$PRICE_VCPU_S" -v p_gib="$PRICE_GIB_S" \
    -v p_gpu="$PRICE_L4_S" -v p_gpu_zr="$PRICE_L4_ZR_S" -v free_cpu="$FREE_VCPU_S" \
    -v free_gib="$FREE_GIB_S" -v date="$PRICE_DATE" -v svc="$svc" -v mem="$memory" '
    function pos(x) { return x > 0 ? x : 0 }
    BEGIN {
      if (concurrency <= 0) { print "error: concurrency must be > 0" > "/dev/stderr"; exit 2 }
      # Instance-based billing: an instance costs for every second it is up, busy or not.
      busy = requests * seconds / concurrency
      billed = busy > min_instances * month ? busy : min_instances * month
      cpu_s = billed * cpu; gib_s = billed * gib
      c_cpu = cpu_s * p_cpu; c_mem = gib_s * p_gib
      f_cpu = pos(cpu_s - free_cpu) * p_cpu; f_mem = pos(gib_s - free_gib) * p_gib
      g = billed * p_gpu; g_zr = billed * p_gpu_zr
      printf "Cloud Run cost estimate for %s: %d vCPU, %s, 1 x NVIDIA L4 (prices of %s)\n", svc, cpu, mem, date
      printf "  %.0f requests x %.3f s / concurrency %g = %.0f busy instance-seconds (%.2f instances busy on average)\n", requests, seconds, concurrency, busy, busy / month
      printf "  billed instance-seconds: %.0f (min instances %d)\n\n", billed, min_instances
      printf "%-28s %14s %14s\n", "USD per month", "no zonal red.", "zonal red."
      printf "%-28s %14.2f %14.2f\n", "CPU", c_cpu, c_cpu
      printf "%-28s %14.2f %14.2f\n", "memory", c_mem, c_mem
      printf "%-28s %14.2f %14.2f\n", "GPU", g, g_zr
      printf "%-28s %14.2f %14.2f\n", "total", c_cpu + c_mem + g, c_cpu + c_mem + g_zr
      printf "%-28s %14.2f %14.2f\n", "total after free tier", f_cpu + f_mem + g, f_cpu + f_mem + g_zr
      printf "\nFree tier: %d vCPU-s and %d GiB-s a month per billing account (no GPU free tier).\n", free_cpu, free_gib
      printf "Not included: idle instances before scale-down (billed too, up to ~15 min after the last\n"
      printf "request), cold starts, Cloud Build, Artifact Registry storage, egress.\n"
      if (busy / month > max_instances)
        printf "warning: %.2f instances busy on average > max instances %d: requests would queue.\n", busy / month, max_instances
    }'
}

# ---------------------------------------------------------------------------------------------
# Arguments

is_command() {
  case $1 in
    deploy | build | status | url | logs | traffic | promote | rollback | delete | cost | job | triggers | durable | alerts | help) return 0 ;;
    *) return 1 ;;
  esac
}

main() {
  # The env file first, so flags override it.
  local env_file="" i=1 arg
  for arg in "$@"; do
    i=$((i + 1))
    if [[ $arg == --env-file ]]; then env_file=${!i:-}; fi
    if [[ $arg == --env-file=* ]]; then env_file=${arg#--env-file=}; fi
  done
  if [[ -z $env_file && -f deploy.env ]]; then env_file=deploy.env; fi
  if [[ -n $env_file ]]; then
    [[ -r $env_file ]] || die "cannot read env file $env_file"
    # The user's settings file, bash syntax (deploy.env.example documents every variable).
    # shellcheck source=/dev/null
    source "$env_file"
  fi

  PROJECT=${PROJECT:-}
  REGION=${REGION:-}
  DRY_RUN=false ASSUME_YES=false NO_TRAFFIC=false SKIP_BUILD=false
  TRAFFIC_TAG="" IMAGE_TAG=${IMAGE_TAG:-} API_KEY_FILE=${API_KEY_FILE:-} REDIS_URI_FILE=${REDIS_URI_FILE:-}
  JOB_INPUT_ARG="" JOB_OUTPUT_ARG="" JOB_TASKS_ARG="" JOB_PARALLELISM_ARG="" JOB_WAIT=false
  ALLOW_UNPINNED_BASE=${ALLOW_UNPINNED_BASE:-false} BASE_REF=""
  COST_REQUESTS="" COST_SECONDS="" COST_CONCURRENCY="" COST_CPU="" COST_MEMORY="" COST_MIN_INSTANCES=""
  local positional=()
  while [[ $# -gt 0 ]]; do
    case $1 in
      --project) PROJECT=${2:?}; shift ;;
      --region) REGION=${2:?}; shift ;;
      --env-file) shift ;;
      --env-file=*) ;;
      --dry-run) DRY_RUN=true ;;
      --yes | -y) ASSUME_YES=true ;;
      --no-traffic) NO_TRAFFIC=true ;;
      --tag) TRAFFIC_TAG=${2:?}; shift ;;
      --skip-build) SKIP_BUILD=true ;;
      --image-tag) IMAGE_TAG=${2:?}; shift ;;
      --api-key-file) API_KEY_FILE=${2:?}; shift ;;
      --redis-uri-file) REDIS_URI_FILE=${2:?}; shift ;;
      --input) JOB_INPUT_ARG=${2:?}; shift ;;
      --output) JOB_OUTPUT_ARG=${2:?}; shift ;;
      --tasks) JOB_TASKS_ARG=${2:?}; shift ;;
      --parallelism) JOB_PARALLELISM_ARG=${2:?}; shift ;;
      --wait) JOB_WAIT=true ;;
      --allow-unpinned-base) ALLOW_UNPINNED_BASE=true ;;
      --zonal-redundancy) GPU_ZONAL_REDUNDANCY=true ;;
      --no-zonal-redundancy) GPU_ZONAL_REDUNDANCY=false ;;
      --requests) COST_REQUESTS=${2:?}; shift ;;
      --seconds) COST_SECONDS=${2:?}; shift ;;
      --concurrency) COST_CONCURRENCY=${2:?}; shift ;;
      --cpu) COST_CPU=${2:?}; shift ;;
      --memory) COST_MEMORY=${2:?}; shift ;;
      --min-instances) COST_MIN_INSTANCES=${2:?}; shift ;;
      -h | --help) usage; exit 0 ;;
      -*) die "unknown option $1 (see: ./deploy-cloudrun.sh help)" ;;
      *) positional+=("$1") ;;
    esac
    shift
  done
  load_settings

  local command=deploy args=()
  if [[ ${#positional[@]} -gt 0 ]] && is_command "${positional[0]}"; then
    command=${positional[0]}
    args=("${positional[@]:1}")
  elif [[ ${#positional[@]} -ge 2 ]]; then
    PROJECT=${positional[0]} REGION=${positional[1]}
    if [[ ${#positional[@]} -gt 2 ]]; then
      command=${positional[2]}
      args=("${positional[@]:3}")
      is_command "$command" || die "unknown command $command"
    fi
  elif [[ ${#positional[@]} -eq 1 ]]; then
    die "unknown command ${positional[0]}; to deploy: ./deploy-cloudrun.sh PROJECT REGION"
  elif [[ -z $PROJECT || -z $REGION ]]; then
    usage >&2
    exit 2
  fi

  if [[ $NO_TRAFFIC == true && -z $TRAFFIC_TAG ]]; then die "--no-traffic needs --tag NAME"; fi
  if [[ $SKIP_BUILD == true && -z $IMAGE_TAG ]]; then die "--skip-build needs --image-tag TAG"; fi
  if [[ -z $IMAGE_TAG ]]; then
    IMAGE_TAG="$(date -u +%Y%m%d-%H%M%S)"
    local commit
    commit=$(git rev-parse --short HEAD 2>/dev/null || true)
    IMAGE_TAG+="${commit:+-$commit}"
  fi

  case $command in
    help) usage ;;
    *) "cmd_$command" ${args[@]+"${args[@]}"} ;;
  esac
}

main "$@"
