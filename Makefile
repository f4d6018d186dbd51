# The two commands for a fresh machine are `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements/*.txt | sha1sum | cut -c1-12)
# sharp for the TypeScript client's downscaling tests, at package-lock.json's pinned version.
NODE_STAMP := clients/typescript/node_modules/.installed

.PHONY: setup system-deps run run-server-vitb32 test test-fast bench soak faults lint samples demo-model clean compose

setup: system-deps $(STAMP) $(NODE_STAMP)  ## create .venv and install everything (idempotent)

$(STAMP):
	@echo "==> creating $(VENV) (needs python3-venv on Debian)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@echo "==> installing requirements/dev.txt into $(VENV): about 6 GB on disk, 3-5 minutes"
	@echo "    (torch 2.14.1 + torchvision 0.29.1 are most of it; pip shows each package below)"
	$(PY) -m pip install --progress-bar on -r requirements/dev.txt
	rm -f $(VENV)/.installed-* && touch $@
	@echo "==> $(VENV) is ready"

$(NODE_STAMP): clients/typescript/package-lock.json
	npm ci --prefix clients/typescript --no-audit --no-fund
	touch $@

system-deps:  ## espeak-ng, ffmpeg, shellcheck, redis-server, jq, nodejs, imagemagick (apt)
	bash scripts/install-system-deps.sh

run: setup  ## every service of services.toml on its port (CLIP :5001, Whisper :8080, ...), embedded default models
	PYTHON=$(PY) bash scripts/run-local.sh

# make run-NAME: one service of services.toml by its name or alias (run-clip, run-server,
# run-whisper, run-worker, run-textembed, ...) on its port, its default model baked offline into
# models/ first (a second or two; textembed loads only from there); explicit targets such as
# run-server-vitb32 win.
run-%: setup
	package=$$(python3 scripts/services.py get $* package) && $(PY) -m $$package.bake && $(PY) -m $$package

run-server-vitb32: setup  ## CLIP server with production-shaped vectors: ViT-B-32, random weights, 512 dims
	CLIP_MODEL=ViT-B-32 CLIP_PRETRAINED=random $(PY) -m server

test: setup  ## the whole suite (what CI runs); the container tests are apart: make images test-images
	$(PY) -m pytest
	@echo "(container tests are not part of make test: make images && make test-images)"

test-fast: setup  ## only the fast in-process tests
	$(PY) -m pytest -m unit

bench: setup  ## side-by-side throughput/latency/RSS tables for both services
	$(PY) -m bench

soak: setup  ## 30 minutes of mixed CLIP traffic (locust): the RSS slope of the server's process tree (on demand, not CI)
	$(PY) -m bench.soak

faults: setup  ## the fault matrix: kills, lost instances, Redis down, GPU OOM, cold starts; prints the table (docs/reliability.md)
	$(PY) -m bench.faults

lint: setup
	$(PY) -m ruff check .
	shellcheck deploy-cloudrun.sh scripts/*.sh .ci/run
	$(VENV)/bin/hadolint --failure-threshold error Dockerfile.cloudrun Dockerfile.slim
	python3 scripts/services.py check

compose:  ## regenerate docker-compose.yml from services.toml (a test checks it is current)
	python3 scripts/services.py compose > docker-compose.yml

samples: setup  ## photo.jpg and meeting.m4a for the curl examples of the README and docs/
	$(PY) scripts/make_samples.py .

demo-model: setup  ## retrain the embedded demo CLIP model (about 2 minutes on 2 cores)
	$(PY) -m server.demo.train

clean:
	rm -rf $(VENV) .pytest_cache models photo.jpg meeting.m4a clients/typescript/node_modules

.PHONY: lock pin-images
lock:  ## regenerate the hash-locked requirements/{server,worker}.lock after editing requirements/*.txt
	bash scripts/lock-requirements.sh

pin-images:  ## resolve requirements/base-images.lock to digests (needs registry access)
	bash scripts/pin-base-images.sh

.PHONY: images run-images test-images bench-images test-compose
images:  ## build IMAGE:local of every service of services.toml (docker, else buildah with local base stand-ins)
	bash scripts/build-images.sh

run-images:  ## the built images on their ports (services.toml), as make run starts the services
	bash scripts/run-images.sh

# $(STAMP), not setup: the tests need the venv only (VENV=... points at an existing one).
test-images: $(STAMP)  ## container tests against the built images (about 10 minutes; not in make test or CI)
	$(PY) -m pytest -m images

bench-images: $(STAMP)  ## image size, layers and cold start, in and out of the container (after make images)
	$(PY) -m bench images

# The CPU images of every service of services.toml first (NAME-cpu, IMAGE:cpu-local; from cache once
# built), then docker-compose.yml's cpu profile for real.
test-compose: $(STAMP)  ## docker compose (or podman-compose) up of the cpu profile: health, requests, draining down (not in make test)
	bash scripts/build-images.sh $$(python3 scripts/services.py names | sed 's/$$/-cpu/')
	$(PY) -m pytest -m compose
