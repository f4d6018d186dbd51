#!/usr/bin/env bash
# Build and deploy the CLIP server and the Whisper worker to Cloud Run, one NVIDIA L4 each.
#
#   ./deploy-cloudrun.sh PROJECT REGION                  build and deploy both services
#   ./deploy-cloudrun.sh --dry-run PROJECT REGION        print every command, run none
#   ./deploy-cloudrun.sh help                            all commands and options
#
# Settings come from deploy.env (see deploy.env.example), then flags. README.md (Deploying to Cloud Run) explains
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
  help                         this text

Options:
  --project ID, --region REGION   where to deploy
  --env-file FILE                 settings file (default: ./deploy.env when it exists)
  --dry-run                       print each command, shell-quoted, one per line; run none
  --no-traffic --tag NAME         deploy a new revision without traffic, reachable at its tag URL
  --skip-build                    deploy an image already pushed (with --image-tag)
  --image-tag TAG                 image tag to build/deploy (default: UTC time + git commit)
  --api-key-file FILE             add FILE's content (no trailing newline; - for stdin) as the new
                                  API key version in Secret Manager
  --zonal-redundancy              GPU zonal redundancy (dearer; default off, see README.md)
  --no-zonal-redundancy
  --yes                           do not ask before delete
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

print_cmd() {
  local out="" arg
  for arg in "$@"; do out+="${out:+ }$(quote "$arg")"; done
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

# The key lives only in Secret Manager: added from a file or stdin, never on a command line or
# in the service's plain env; Cloud Run injects it as API_KEY through --set-secrets.
ensure_api_key_secret() {
  [[ -n $API_KEY_SECRET ]] || { log "API_KEY_SECRET is empty: deploying without an API key"; return 0; }
  describe_or_create \
    gcloud secrets describe "$API_KEY_SECRET" --project="$PROJECT" -- \
    gcloud secrets create "$API_KEY_SECRET" --replication-policy=automatic --project="$PROJECT" --quiet
  if [[ -n $API_KEY_FILE ]]; then
    if [[ $API_KEY_FILE != "-" ]]; then
      [[ -s $API_KEY_FILE ]] || die "--api-key-file $API_KEY_FILE is missing or empty"
      # The service compares the key byte for byte: a trailing newline would lock every client out.
      if [[ -z $(tail -c 1 "$API_KEY_FILE") ]]; then
        die "$API_KEY_FILE ends with a newline; write it with: openssl rand -hex 32 | tr -d '\\n' > $API_KEY_FILE"
      fi
    fi
    run gcloud secrets versions add "$API_KEY_SECRET" --data-file="$API_KEY_FILE" --project="$PROJECT" --quiet
  else
    local check=(gcloud secrets versions list "$API_KEY_SECRET" --filter=state:enabled --limit=1
      --format=value\(name\) --project="$PROJECT")
    if [[ $DRY_RUN == true ]]; then
      print_cmd "${check[@]}"
    elif [[ -z $("${check[@]}") ]]; then
      die "secret $API_KEY_SECRET has no enabled version: run again with --api-key-file FILE"
    fi
  fi
  run gcloud secrets add-iam-policy-binding "$API_KEY_SECRET" \
    --member="serviceAccount:$SERVICE_ACCOUNT" --role=roles/secretmanager.secretAccessor \
    --project="$PROJECT" --quiet
}

build_image() {
  local svc=$1 config subs
  subs="_REGION=$REGION,_REPO=$AR_REPO,_IMAGE=$(cfg "$svc" IMAGE),_TAG=$IMAGE_TAG"
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
  local extra
  for extra in $EXTRA_ENV_VARS; do pairs+=("$extra"); done
  local joined="" pair delim=","
  for pair in "${pairs[@]}"; do
    [[ $pair != API_KEY=* ]] || die "API_KEY must not be a plain env var; it comes from Secret Manager"
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
    --startup-probe="httpGet.path=/health,httpGet.port=$port,initialDelaySeconds=0,timeoutSeconds=$STARTUP_PROBE_TIMEOUT_S,periodSeconds=$STARTUP_PROBE_PERIOD_S,failureThreshold=$STARTUP_PROBE_FAILURE_THRESHOLD"
    --service-account="$SERVICE_ACCOUNT"
    --set-env-vars="$envs"
    --labels="app=gpu-inference,component=$svc")
  if [[ -n $API_KEY_SECRET ]]; then
    args+=(--set-secrets="API_KEY=$API_KEY_SECRET:latest")
  else
    args+=(--clear-secrets)
  fi
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
    enable_apis
    ensure_registry
  fi
  ensure_service_account
  ensure_api_key_secret
  for svc in $targets; do
    [[ $SKIP_BUILD == true ]] || build_image "$svc"
    deploy_service "$svc"
  done
}

cmd_build() {
  require_target
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
  log "see README.md (Deploying to Cloud Run, Delete) to remove those too."
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
    deploy | build | status | url | logs | traffic | promote | rollback | delete | cost | help) return 0 ;;
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
  TRAFFIC_TAG="" IMAGE_TAG=${IMAGE_TAG:-} API_KEY_FILE=${API_KEY_FILE:-}
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
