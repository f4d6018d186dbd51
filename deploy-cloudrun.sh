#!/usr/bin/env bash
# Build and deploy the services of services.toml (the CLIP server, the Whisper worker, ...) to Cloud
# Run, one NVIDIA L4 each: one Knative spec per service and job, rendered from the table and
# deploy.env (scripts/render_spec.py) and applied with `gcloud run services|jobs replace`.
#
#   ./deploy-cloudrun.sh PROJECT REGION                  build and deploy both services
#   ./deploy-cloudrun.sh --dry-run PROJECT REGION        print every command, run none
#   ./deploy-cloudrun.sh --dry-run PROJECT REGION render [SERVICE]   print the specs
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

Commands (SERVICE is a name of services.toml (clip, whisper, ...), an alias (worker) or a Cloud Run
service name; default all):
  deploy [SERVICE|all]         enable APIs, create the registry, service accounts and API key secret
                               when missing, build with Cloud Build, render the spec and apply it
                               (gcloud run services replace); the default command
  render [SERVICE|all]         print the service and job specs a deploy would apply (no build, no apply)
  build [SERVICE|all]          build and push the images only
  status [SERVICE|all]         service details (URL, traffic split) and recent revisions
  url [SERVICE]                print the service URL
  logs SERVICE                 recent log lines
  traffic SERVICE TAG=PCT[,..] split traffic between tagged revisions (staged rollout)
  promote SERVICE              send 100% of traffic to the latest revision
  rollback SERVICE REVISION    send 100% of traffic to REVISION
  delete [SERVICE|all]         delete the services (asks first unless --yes)
  cost [SERVICE]               monthly cost estimate (needs --requests and --seconds)
  job SERVICE ACTION           Cloud Run Job (batch mode, python -m PACKAGE.job); ACTION:
                                 deploy    build (unless --skip-build), render its spec, apply it
                                           (gcloud run jobs replace)
                                 execute   run it (--input SRC --output DST --tasks N override)
                                 status    the job and its recent executions
                                 logs      recent log lines of its tasks
  triggers SERVICE [KIND]      event sources for the service's /events routes; KIND, one or
                               more (default: pubsub tasks):
                                 pubsub    topic, dead-letter topic, OIDC push subscription to
                                           /events/pubsub, Cloud Storage notification (PREFIX_EVENTS_BUCKET)
                                 eventarc  Eventarc trigger on object finalize -> /events/storage
                                 tasks     Cloud Tasks queue with rate limits and OIDC tokens
  alerts [FILE..]              Cloud Monitoring alert policies from alerts/*.yaml (create or update)
  help                         this text

Options:
  --project ID, --region REGION   where to deploy
  --env-file FILE                 settings file (default: ./deploy.env when it exists)
  --dry-run                       print each command, shell-quoted, one per line; run none
  --no-traffic --tag NAME         deploy a new revision without traffic, reachable at its tag URL
                                  (the spec keeps the live split and adds the revision at 0%)
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
  : "${RUN_SA_NAME:=gpu-inference-run}"
  # Cloud Build runs as its own identity: Artifact Registry writer on the repository, log writer.
  : "${BUILD_SA_NAME:=gpu-inference-build}"
  : "${BUILD_SERVICE_ACCOUNT:=}"
  # gs://BUCKET/PATH: the weights mounted read-only from Cloud Storage instead of baked (docs/deploy.md).
  : "${MODELS_FROM:=}"
  # Where the rendered specs are written before `gcloud run services|jobs replace` applies them.
  : "${SPEC_DIR:=build/specs}"
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
  # Before the first probe: 60 s on top of the 240 s above, for multi-GB images (Cloud Run allows
  # up to 240 s here too, so up to 480 s in all).
  : "${STARTUP_PROBE_INITIAL_DELAY_S:=60}"
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

  # Events (triggers): uploads to PREFIX_EVENTS_BUCKET (under PREFIX_EVENTS_PREFIX) are processed
  # by the service, results written below PREFIX_EVENTS_OUTPUT (gs://bucket/prefix); empty = unset.
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

  # Per-service settings (CPU, memory, instances, threads, batch, the job's shape) default to the
  # service's row of services.toml; deploy.env overrides each as PREFIX_KEY (CLIP_CPU=..,
  # WORKER_JOB_TASKS=..), and the model as its own variables (CLIP_MODEL=.., WHISPER_MODEL=..).
  :
}

# The service table (services.toml) through scripts/services.py: Python >= 3.11 (tomllib), else
# gcloud's bundled Python.
table() {
  "$TABLE_PYTHON" scripts/services.py "$@"
}

find_table_python() {
  local candidate sdk
  for candidate in "${CLOUDSDK_PYTHON:-}" python3; do
    if [[ -n $candidate ]] && "$candidate" -c 'import tomllib' 2>/dev/null; then TABLE_PYTHON=$candidate; return 0; fi
  done
  sdk=$(gcloud info --format='value(installation.sdk_root)' 2>/dev/null || true)
  candidate=$sdk/platform/bundledpythonunix/bin/python3
  [[ -x $candidate ]] || die "scripts/services.py needs Python >= 3.11 (tomllib) or gcloud's bundled Python"
  TABLE_PYTHON=$candidate
}

# setting SVC KEY: PREFIX_KEY from deploy.env or the environment, else services.toml's [SVC.cloudrun]
# (KEY job_*: PREFIX_JOB_* and [SVC.job]); e.g. setting clip cpu -> $CLIP_CPU or 8.
setting() {
  local svc=$1 key=$2 section=cloudrun prefix var
  if [[ $key == job_* ]]; then section=job key=${key#job_}; fi
  prefix=$(table get "$svc" env_prefix)
  var="${prefix}_$([[ $section == job ]] && printf 'JOB_')$(printf '%s' "$key" | tr '[:lower:]' '[:upper:]')"
  if [[ -n ${!var:-} ]]; then printf '%s' "${!var}"; else table get "$svc" "$section.$key"; fi
}

# prefixed SVC NAME: deploy.env's PREFIX_NAME of the service (empty when unset), e.g. CLIP_EVENTS_BUCKET.
prefixed() {
  local var
  var="$(table get "$1" env_prefix)_$2"
  printf '%s' "${!var:-}"
}

require_target() {
  [[ -n $PROJECT ]] || die "PROJECT missing: ./deploy-cloudrun.sh PROJECT REGION ... or --project"
  [[ -n $REGION ]] || die "REGION missing: ./deploy-cloudrun.sh PROJECT REGION ... or --region"
}

# service_key WORD -> the table's name of the service WORD means (name, alias, image, Cloud Run name).
service_key() {
  table resolve "$1" 2>/dev/null || die "unknown service '$1' ($(table names | tr '\n' ' ')or their Cloud Run names)"
}

service_name() {
  local key
  key=$(service_key "$1") || exit 2  # bash clears set -e inside $(...): stop here explicitly
  setting "$key" service
}

# expand_targets [SERVICE|all] -> the table's names, one per line.
expand_targets() {
  case ${1:-all} in
    all) table names ;;
    *) service_key "$1" ;;
  esac
}

image_ref() {
  printf '%s-docker.pkg.dev/%s/%s/%s:%s' "$REGION" "$PROJECT" "$AR_REPO" "$(table get "$1" image)" "$IMAGE_TAG"
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
  "$TABLE_PYTHON" scripts/render_spec.py mask "$1"
}

# ensure_secret SECRET FILE WHAT: the secret exists, holds FILE's content as its newest version when
# FILE is given, its newest enabled version is pinned in the spec, and only the runtime identity may
# read it. Values live only in Secret Manager: added from a file or stdin, never on a command line
# or in the service's plain env; Cloud Run injects them from the spec's secretKeyRef.
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
  fi
  pin_secret_version "$secret" "$what"
  run gcloud secrets add-iam-policy-binding "$secret" \
    --member="serviceAccount:$SERVICE_ACCOUNT" --role=roles/secretmanager.secretAccessor \
    --project="$PROJECT" --quiet
}

# pin_secret_version SECRET WHAT: the newest enabled version's number joins SECRET_VERSIONS, which
# the spec names instead of `latest`, so every instance of a revision reads the same value (Google's
# advice for secrets exposed as variables); a new version reaches the service with the next deploy.
# A dry run prints the lookup and pins the placeholder VERSION.
pin_secret_version() {
  local secret=$1 what=$2 version
  capture_into version "projects/$PROJECT/secrets/$secret/versions/VERSION" gcloud secrets versions list "$secret" \
    --filter=state:enabled --sort-by=~createTime --limit=1 --format=value\(name\) --project="$PROJECT"
  [[ -n $version ]] || die "secret $secret has no enabled version: run again with --${what}-file FILE"
  SECRET_VERSIONS+=" $secret=${version##*/}"
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

# The base image pinned by digest in requirements/base-images.lock (BASE_REF): CUDA_BASE_IMAGE for
# a GPU service, CPU_BASE_IMAGE for a CPU one; refuses a tag-only entry unless --allow-unpinned-base.
# Checked before anything is created.
resolve_base_image() {
  local ref name=CUDA_BASE_IMAGE lock=${BASE_IMAGES_LOCK:-requirements/base-images.lock} svc=${1:-}
  [[ -n $svc ]] || { svc=$(table names); svc=${svc%%$'\n'*}; }
  [[ $(table get "$svc" gpu) == true ]] || name=CPU_BASE_IMAGE
  [[ -r $lock ]] || die "cannot read $lock"
  ref=$(sed -n "s/^$name=//p" "$lock")
  [[ -n $ref ]] || die "$lock has no $name"
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

# The dedicated build identity: it may push to this repository and write build logs, nothing else
# (Google's advice over the default Cloud Build account). Whoever deploys needs
# roles/iam.serviceAccountUser on it to submit builds as it.
ensure_build_identity() {
  ensure_sa BUILD_SERVICE_ACCOUNT "$BUILD_SA_NAME" "Cloud Build for GPU inference images"
  run gcloud artifacts repositories add-iam-policy-binding "$AR_REPO" --location="$REGION" \
    --member="serviceAccount:$BUILD_SERVICE_ACCOUNT" --role=roles/artifactregistry.writer --project="$PROJECT" --quiet
  run gcloud projects add-iam-policy-binding "$PROJECT" --member="serviceAccount:$BUILD_SERVICE_ACCOUNT" \
    --role=roles/logging.logWriter --condition=None --project="$PROJECT" --quiet
  # gcloud builds submit stages the source in gs://PROJECT_cloudbuild; the build reads it from there.
  describe_or_create gcloud storage buckets describe "gs://${PROJECT}_cloudbuild" --project="$PROJECT" -- \
    gcloud storage buckets create "gs://${PROJECT}_cloudbuild" --project="$PROJECT" --quiet
  run gcloud storage buckets add-iam-policy-binding "gs://${PROJECT}_cloudbuild" \
    --member="serviceAccount:$BUILD_SERVICE_ACCOUNT" --role=roles/storage.objectViewer --project="$PROJECT" --quiet
}

# One cloudbuild.yaml for every service: the table's build arguments become its substitutions.
build_image() {
  local svc=$1 subs pair
  resolve_base_image "$svc"  # a GPU service builds on the CUDA base, a CPU one on the slim one
  [[ -n $BUILD_SERVICE_ACCOUNT ]] || ensure_build_identity
  subs="_REGION=$REGION,_REPO=$AR_REPO,_IMAGE=$(table get "$svc" image),_TAG=$IMAGE_TAG,_BASE_IMAGE=$BASE_REF"
  subs+=",_DOCKERFILE=$(table get "$svc" dockerfile)"
  while IFS= read -r pair; do
    case $pair in
      BASE_IMAGE=*) ;;
      # The model as deploy.env names it (CLIP_MODEL=.., WHISPER_MODEL=..), else the table's default.
      MODEL_ENV=*) subs+=",_MODEL_ENV=$(model_env "$svc")" ;;
      *) subs+=",_$pair" ;;
    esac
  done < <(table build-args "$svc")
  [[ -z $MODELS_FROM ]] || subs+=",_BAKE=0"
  run gcloud builds submit --config=cloudbuild.yaml --substitutions="$subs" \
    --service-account="projects/$PROJECT/serviceAccounts/$BUILD_SERVICE_ACCOUNT" --project="$PROJECT" --quiet .
}

# model_env SVC: the model's variables (KEY=VALUE, space-separated), each overridable in deploy.env.
model_env() {
  local pair key words=""
  while IFS= read -r pair; do
    key=${pair%%=*}
    words+="${words:+ }$key=${!key:-${pair#*=}}"
  done < <(table get "$1" model)
  printf '%s' "$words"
}

check_probe() {
  local budget=$((STARTUP_PROBE_PERIOD_S * STARTUP_PROBE_FAILURE_THRESHOLD))
  ((budget <= 240)) || die "startup probe budget ${budget}s > 240s (period x failureThreshold)"
  ((STARTUP_PROBE_INITIAL_DELAY_S <= 240)) || die "startup probe initialDelaySeconds ${STARTUP_PROBE_INITIAL_DELAY_S}s > 240s"
}

# render KIND SVC: the spec (service or job) written to SPEC_DIR, its path printed. The spec is the
# whole configuration: what deploy.env no longer says leaves the service with the next deploy. The
# file name carries a checksum of the content, so a printed command names exactly one spec.
render() {
  local kind=$1 svc=$2 tmp sum
  mkdir -p "$SPEC_DIR"
  tmp="$SPEC_DIR/.$kind-$svc.yaml.tmp"
  "$TABLE_PYTHON" scripts/render_spec.py "$kind" "$svc" >"$tmp" || exit 2
  sum=$(cksum <"$tmp")
  mv "$tmp" "$SPEC_DIR/$kind-$svc-${sum%% *}.yaml"
  printf '%s' "$SPEC_DIR/$kind-$svc-${sum%% *}.yaml"
}

deploy_service() {
  local svc=$1 name spec
  name=$(setting "$svc" service)
  if [[ $NO_TRAFFIC == true ]]; then
    # The live split is kept and the new revision joins it at 0% under its tag.
    local describe=(gcloud run services describe "$name" --format=json --project="$PROJECT" --region="$REGION")
    if [[ $DRY_RUN == true ]]; then
      print_cmd "${describe[@]}"
      CURRENT_SERVICE='{"status": {"traffic": [{"revisionName": "'"$name"'-00001-cur", "percent": 100}]}}'
    else
      log "+ $(print_cmd "${describe[@]}")"
      # A service that does not exist yet has no split to keep: its first revision takes the traffic.
      CURRENT_SERVICE=$("${describe[@]}" 2>/dev/null) || CURRENT_SERVICE=""
    fi
  fi
  spec=$(render service "$svc")
  [[ $DRY_RUN != true ]] || log "(dry run) spec of $name: $spec"
  run gcloud run services replace "$spec" --project="$PROJECT" --region="$REGION" --quiet
  # Who may call it is IAM, not the spec.
  if [[ $ALLOW_UNAUTHENTICATED == true ]]; then
    run gcloud run services add-iam-policy-binding "$name" --member=allUsers --role=roles/run.invoker \
      --project="$PROJECT" --region="$REGION" --quiet
  else
    run gcloud run services remove-iam-policy-binding "$name" --member=allUsers --role=roles/run.invoker \
      --project="$PROJECT" --region="$REGION" --quiet || true  # absent already: nothing to remove
  fi
  announce_url "$svc"
}

service_url() {
  run gcloud run services describe "$(setting "$1" service)" --project="$PROJECT" --region="$REGION" \
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
  var=$(table get "$svc" url_env)
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
    for svc in $targets; do resolve_base_image "$svc"; done  # every base pinned, before anything runs
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
    [[ -z $MODELS_FROM ]] || grant_buckets "$SERVICE_ACCOUNT" "$MODELS_FROM" "" ""
    [[ $SKIP_BUILD == true ]] || build_image "$svc"
    deploy_service "$svc"
  done
}

# The specs a deploy would apply, on stdout, one YAML document each. Secret versions are looked up
# (read-only) unless --dry-run, which shows the placeholder VERSION instead.
cmd_render() {
  require_target
  check_probe
  local targets svc secret
  targets=$(expand_targets "${1:-all}")
  [[ -n $SERVICE_ACCOUNT ]] || SERVICE_ACCOUNT="$RUN_SA_NAME@$PROJECT.iam.gserviceaccount.com"
  [[ -n $JOB_SERVICE_ACCOUNT ]] || JOB_SERVICE_ACCOUNT="$JOB_SA_NAME@$PROJECT.iam.gserviceaccount.com"
  for secret in $API_KEY_SECRET $REDIS_URI_SECRET $CALLBACK_SECRET_NAME; do
    pin_secret_version "$secret" "${secret}" >/dev/null
  done
  for svc in $targets; do
    printf -- '---\n'; cat "$(render service "$svc")"
    printf -- '---\n'; cat "$(render job "$svc")"
  done
}

cmd_build() {
  require_target
  local targets svc
  targets=$(expand_targets "${1:-all}")
  for svc in $targets; do resolve_base_image "$svc"; done  # every base pinned, before anything runs
  enable_apis
  ensure_registry
  for svc in $targets; do build_image "$svc"; done
}

cmd_status() {
  require_target
  local targets svc name
  targets=$(expand_targets "${1:-all}")
  for svc in $targets; do
    name=$(setting "$svc" service)
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
  for svc in $targets; do names+=("$(setting "$svc" service)"); done
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

# Cloud Run GPU jobs exist only in gcloud's beta track (528); CPU jobs use the GA commands.
job_gcloud() {
  case $(setting "$1" job_gpu) in
    true | 1) printf '%s\n' gcloud beta ;;
    *) printf '%s\n' gcloud ;;
  esac
}

job_deploy() {
  local svc=$1 name input output spec track
  name=$(setting "$svc" job_name)
  input=${JOB_INPUT_ARG:-$(prefixed "$svc" JOB_INPUT)}
  output=${JOB_OUTPUT_ARG:-$(prefixed "$svc" JOB_OUTPUT)}
  if [[ $SKIP_BUILD != true ]]; then
    resolve_base_image "$svc"
    enable_apis
    ensure_registry
  fi
  ensure_sa JOB_SERVICE_ACCOUNT "$JOB_SA_NAME" "Cloud Run GPU inference jobs"
  # objectUser on the output: a retried task rewrites its failures file, and overwriting needs delete.
  grant_buckets "$JOB_SERVICE_ACCOUNT" "$input" "$output" roles/storage.objectUser
  [[ -z $MODELS_FROM ]] || grant_buckets "$JOB_SERVICE_ACCOUNT" "$MODELS_FROM" "" ""
  spec=$(render job "$svc")  # validates --tasks/--parallelism before anything is built
  [[ $SKIP_BUILD == true ]] || build_image "$svc"
  track=$(job_gcloud "$svc")
  # shellcheck disable=SC2086  # "gcloud" or "gcloud beta": split on purpose
  run $track run jobs replace "$spec" --project="$PROJECT" --region="$REGION" --quiet
  log "job $name deployed; run it: ./deploy-cloudrun.sh job $svc execute --input gs://BUCKET/in/ --output gs://BUCKET/out/"
}

job_execute() {
  local svc=$1 name track
  name=$(setting "$svc" job_name)
  track=$(job_gcloud "$svc")
  # shellcheck disable=SC2206  # "gcloud" or "gcloud beta": split on purpose
  local args=($track run jobs execute "$name" --project="$PROJECT" --region="$REGION")
  [[ -z $JOB_TASKS_ARG ]] || args+=(--tasks="$JOB_TASKS_ARG")
  local pairs=""
  [[ -z $JOB_INPUT_ARG ]] || pairs+="JOB_INPUT=$JOB_INPUT_ARG"
  [[ -z $JOB_OUTPUT_ARG ]] || pairs+="${pairs:+,}JOB_OUTPUT=$JOB_OUTPUT_ARG"
  # Overrides for this execution only; the job's service account must already reach these buckets.
  [[ -z $pairs ]] || args+=(--update-env-vars="$pairs")
  [[ $JOB_WAIT != true ]] || args+=(--wait)
  run "${args[@]}" --quiet
}

cmd_job() {
  require_target
  [[ $# -eq 2 ]] || die "usage: job SERVICE deploy|execute|status|logs"
  local svc name track
  svc=$(service_key "$1")
  name=$(setting "$svc" job_name)
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

# topics_with_dead_letter TOPIC DEAD: both topics, and a subscription on DEAD (a topic without a
# subscription drops what it receives: dead letters are kept for a week). Events and durable jobs.
topics_with_dead_letter() {
  local topic=$1 dead=$2 t
  for t in "$topic" "$dead"; do
    describe_or_create gcloud pubsub topics describe "$t" --project="$PROJECT" -- \
      gcloud pubsub topics create "$t" --labels=app=gpu-inference --project="$PROJECT" --quiet
  done
  describe_or_create gcloud pubsub subscriptions describe "$dead-sub" --project="$PROJECT" -- \
    gcloud pubsub subscriptions create "$dead-sub" --topic="$dead" --message-retention-duration=7d \
    --labels=app=gpu-inference --project="$PROJECT" --quiet
}

# push_subscription TOPIC DEAD SUB ENDPOINT: TOPIC and its dead letter DEAD, the push subscription
# SUB to ENDPOINT (OIDC as the invoker account), and the roles Pub/Sub's own agent needs: it signs
# the push tokens and moves undeliverable messages to DEAD. Events and durable jobs share it.
push_subscription() {
  local topic=$1 dead=$2 sub=$3 endpoint=$4
  local pubsub_agent="service-$PROJECT_NUMBER@gcp-sa-pubsub.iam.gserviceaccount.com"
  topics_with_dead_letter "$topic" "$dead"
  local settings=(--push-endpoint="$endpoint" --push-auth-service-account="$INVOKER_SERVICE_ACCOUNT"
    --ack-deadline="$PUBSUB_ACK_DEADLINE_S" --min-retry-delay=10s --max-retry-delay=600s
    --dead-letter-topic="$dead" --max-delivery-attempts="$PUBSUB_MAX_DELIVERY_ATTEMPTS")
  describe_create_or_update gcloud pubsub subscriptions describe "$sub" --project="$PROJECT" -- \
    gcloud pubsub subscriptions create "$sub" --topic="$topic" "${settings[@]}" \
    --labels=app=gpu-inference --project="$PROJECT" --quiet -- \
    gcloud pubsub subscriptions update "$sub" "${settings[@]}" --project="$PROJECT" --quiet
  run gcloud iam service-accounts add-iam-policy-binding "$INVOKER_SERVICE_ACCOUNT" \
    --member="serviceAccount:$pubsub_agent" --role=roles/iam.serviceAccountTokenCreator \
    --project="$PROJECT" --quiet
  run gcloud pubsub topics add-iam-policy-binding "$dead" --member="serviceAccount:$pubsub_agent" \
    --role=roles/pubsub.publisher --project="$PROJECT" --quiet
  run gcloud pubsub subscriptions add-iam-policy-binding "$sub" --member="serviceAccount:$pubsub_agent" \
    --role=roles/pubsub.subscriber --project="$PROJECT" --quiet
}

triggers_pubsub() {
  local svc=$1 name=$2 url=$3 bucket prefix topic dead sub
  bucket=$(prefixed "$svc" EVENTS_BUCKET)
  prefix=$(prefixed "$svc" EVENTS_PREFIX)
  topic="$name-events" dead="$name-events-dead-letter" sub="$name-events-push"
  # A push cannot add headers (its Authorization carries the OIDC token): with an API key, the
  # service takes it as ?token= on /events/ routes.
  local endpoint="$url/events/pubsub"
  [[ -z $TRIGGER_KEY ]] || endpoint+="?token=$TRIGGER_KEY"
  push_subscription "$topic" "$dead" "$sub" "$endpoint"
  if [[ -z $bucket ]]; then
    log "$svc: $(table get "$svc" env_prefix)_EVENTS_BUCKET is empty: no Cloud Storage notification (publish JSON jobs to $topic)"
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
  bucket=$(prefixed "$svc" EVENTS_BUCKET)
  [[ -n $bucket ]] || die "eventarc needs $(table get "$svc" env_prefix)_EVENTS_BUCKET (a bucket in $REGION)"
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
  name=$(setting "$svc" service)
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
    [[ -n $(prefixed "$svc" EVENTS_BUCKET) ]] || die "eventarc needs $(table get "$svc" env_prefix)_EVENTS_BUCKET (a bucket in $REGION)"
  fi
  local api unique=()
  for api in "${apis[@]}"; do
    [[ " ${unique[*]-} " == *" $api "* ]] || unique+=("$api")
  done
  run gcloud services enable "${unique[@]}" --project="$PROJECT" --quiet
  [[ -n $SERVICE_ACCOUNT ]] || SERVICE_ACCOUNT="$RUN_SA_NAME@$PROJECT.iam.gserviceaccount.com"
  # The service reads the uploads and writes results create-only (a redelivered event finds its
  # result and keeps it): viewer on the uploads, creator + viewer on the results, nothing more.
  grant_buckets "$SERVICE_ACCOUNT" "gs://$(prefixed "$svc" EVENTS_BUCKET)" "$(prefixed "$svc" EVENTS_OUTPUT)" \
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

# durable SERVICE: opt-in durable mode for callback_url jobs (docs/reliability.md). A topic
# SERVICE-jobs with an OIDC push subscription to /events/pubsub (redelivery until the job's result
# is stored, then a dead-letter topic kept 7 days), the IAM that needs, and JOB_TOPIC in the
# service's spec (PREFIX_DURABLE=true; keep it in deploy.env, or the next deploy's spec drops it).
# Needs JOB_STORE_BUCKET: every instance must reach the jobs' stored requests.
cmd_durable() {
  require_target
  [[ $# -eq 1 ]] || die "usage: durable SERVICE"
  local svc name topic dead sub url key="" endpoint
  svc=$(service_key "$1")
  name=$(setting "$svc" service)
  [[ -n $JOB_STORE_BUCKET ]] || die "durable mode needs JOB_STORE_BUCKET (a gs:// job store every instance reaches); deploy with it first"
  topic="$name-jobs" dead="$name-jobs-dead-letter" sub="$name-jobs-push"
  run gcloud services enable pubsub.googleapis.com --project="$PROJECT" --quiet
  [[ -n $SERVICE_ACCOUNT ]] || SERVICE_ACCOUNT="$RUN_SA_NAME@$PROJECT.iam.gserviceaccount.com"
  ensure_invoker "$name"
  PROJECT_NUMBER=""
  project_number
  capture_into url https://SERVICE-URL gcloud run services describe "$name" --project="$PROJECT" \
    --region="$REGION" --format=value\(status.url\)
  [[ -n $url ]] || die "service $name has no URL: deploy it first"
  if [[ -n $API_KEY_SECRET ]]; then  # a push cannot add headers: the key goes as ?token=, never printed
    capture_into key API_KEY gcloud secrets versions access latest --secret="$API_KEY_SECRET" --project="$PROJECT"
    [[ -n $key ]] || die "secret $API_KEY_SECRET has no enabled version"
    [[ $DRY_RUN == true ]] || MASKED+=("$key")
  fi
  endpoint="$url/events/pubsub${key:+?token=$key}"
  # The service ends a job worker_lost after JOB_MAX_ATTEMPTS (3) deliveries; the dead letter
  # only takes what not even that could end. The push holds the job until its result is stored.
  push_subscription "$topic" "$dead" "$sub" "$endpoint"
  run gcloud pubsub topics add-iam-policy-binding "$topic" --member="serviceAccount:$SERVICE_ACCOUNT" \
    --role=roles/pubsub.publisher --project="$PROJECT" --quiet
  # JOB_TOPIC goes into the spec like every other setting, and the spec is applied again.
  printf -v "$(table get "$svc" env_prefix)_DURABLE" '%s' true
  export "$(table get "$svc" env_prefix)_DURABLE"
  ensure_api_key_secret
  ensure_redis_secret
  ensure_callback_secret
  deploy_service "$svc"
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
  local cpu memory min_instances max_instances gib number
  cpu=${COST_CPU:-$(setting "$svc" cpu)} memory=${COST_MEMORY:-$(setting "$svc" memory)}
  min_instances=${COST_MIN_INSTANCES:-$(setting "$svc" min_instances)}
  max_instances=$(setting "$svc" max_instances)
  for number in "$COST_REQUESTS" "$COST_SECONDS" "${COST_CONCURRENCY:-1}" "$cpu" "$min_instances"; do
    [[ $number =~ ^[0-9]+([.][0-9]+)?$ ]] || die "cost: '$number' is not a non-negative number"
  done
  gib=$(memory_gib "$memory")
  local p_gpu=$PRICE_L4_S p_gpu_zr=$PRICE_L4_ZR_S gpu_label="1 x NVIDIA L4"
  if [[ $(table get "$svc" gpu) != true ]]; then p_gpu=0 p_gpu_zr=0 gpu_label="no GPU"; fi
  awk -v requests="$COST_REQUESTS" -v seconds="$COST_SECONDS" -v concurrency="${COST_CONCURRENCY:-1}" \
    -v cpu="$cpu" -v gib="$gib" -v min_instances="$min_instances" -v max_instances="$max_instances" \
    -v month="$SECONDS_PER_MONTH" -v p_cpu="$PRICE_VCPU_S" -v p_gib="$PRICE_GIB_S" \
    -v p_gpu="$p_gpu" -v p_gpu_zr="$p_gpu_zr" -v free_cpu="$FREE_VCPU_S" -v gpu_label="$gpu_label" \
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
      printf "Cloud Run cost estimate for %s: %d vCPU, %s, %s (prices of %s)\n", svc, cpu, mem, gpu_label, date
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
    deploy | render | build | status | url | logs | traffic | promote | rollback | delete | cost | job | triggers | durable | alerts | help) return 0 ;;
    *) return 1 ;;
  esac
}

# SECRET_VERSIONS, CURRENT_SERVICE and the JOB_*_ARG values are read by scripts/render_spec.py.
# shellcheck disable=SC2034
main() {
  # Every setting is exported: scripts/render_spec.py reads them (deploy.env, flags, defaults).
  set -a
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
  ALLOW_UNPINNED_BASE=${ALLOW_UNPINNED_BASE:-false} BASE_REF="" SECRET_VERSIONS="" CURRENT_SERVICE=""
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
  find_table_python

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
