"""Static checks of Dockerfile.cloudrun and Dockerfile.slim, for every service of services.toml
built from them (the app is a build argument): sources, layer order, runtime contract."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from scripts.services import build_args, load
from tests.shipping.helpers import (
    DOCKERFILES,
    REPO,
    copy_sources,
    dockerignore_excludes,
    parse_dockerfile,
    read_dockerignore,
    stage_names,
)

PARAMS = pytest.mark.parametrize("dockerfile,name", DOCKERFILES)


def with_args(instructions, name):
    """The instructions with the service's build arguments substituted (${APP}/ -> server/)."""
    args = build_args(load()[name])
    for instruction in instructions:
        for key, value in args.items():
            instruction.args = instruction.args.replace("${" + key + "}", value)
        if instruction.keyword in ("RUN", "COPY"):  # shell quotes do not matter to the checks
            instruction.args = instruction.args.replace('"', "")
    return instructions


def final_stage(instructions):
    last = stage_names(instructions)[-1]
    return [i for i in instructions if i.stage == last]


def env_value(instructions, name):
    """The last ENV value of ``name`` among ``instructions`` (key=value form)."""
    value = None
    for instruction in instructions:
        if instruction.keyword == "ENV":
            match = re.search(rf"(?:^|\s){name}=(\S+)", instruction.args)
            if match:
                value = match.group(1)
    return value


@PARAMS
def test_every_copy_source_exists_and_reaches_the_build_context(dockerfile, name):
    instructions = with_args(parse_dockerfile(REPO / dockerfile), name)
    stages = set(stage_names(instructions))
    patterns = read_dockerignore()
    checked = 0
    for instruction in instructions:
        if instruction.keyword not in ("COPY", "ADD"):
            continue
        sources = copy_sources(instruction)
        if sources is None or any(s in stages for s in sources):
            continue  # copied from a build stage, not the repo
        for source in sources:
            matches = list(REPO.glob(source.rstrip("/"))) if any(c in source for c in "*?[") \
                else [REPO / source]
            assert any(m.exists() for m in matches), f"{dockerfile}:{instruction.line}: {source} missing"
            assert not dockerignore_excludes(source, patterns), (
                f"{dockerfile}:{instruction.line}: .dockerignore excludes {source}")
            checked += 1
    assert checked >= 3  # requirements/, core/ and the package at least


@PARAMS
def test_requirements_are_installed_from_the_hash_locked_file(dockerfile, name):
    instructions = with_args(parse_dockerfile(REPO / dockerfile), name)
    deps = [i for i in instructions if i.stage == stage_names(instructions)[0]]
    text = " ".join(i.args for i in deps if i.keyword == "RUN")
    installs = re.findall(r"pip install ([^&]*-r\s+/tmp/requirements/\S+)", text)
    assert len(installs) == 1, installs
    assert "--require-hashes" in installs[0], "every downloaded file must match a hash of the lock"
    names = re.findall(r"-r\s+/tmp/requirements/(\S+)", installs[0])
    assert names == [load()[name]["lock"]]
    assert (REPO / "requirements" / names[0]).exists(), f"requirements/{names[0]} missing"


def test_dockerignore_admits_every_app_of_the_table_and_keeps_out_the_rest():
    patterns = read_dockerignore()
    image_sources = {"core", "requirements", "model-input", *(s["package"] for s in load().values())}
    for source in image_sources:
        assert not dockerignore_excludes(f"{source}/x.py", patterns), source
    # Every other top-level path of the repository stays out of the build context.
    tracked = {path.name for path in REPO.iterdir()} - image_sources - {".venv"}
    for path in tracked:
        assert dockerignore_excludes(path, patterns), f".dockerignore lets {path} into the build context"
    for secret in ("deploy.env", "api-key.txt", "server.key", "photo.jpg"):
        assert dockerignore_excludes(secret, patterns), secret


def test_dockerignore_check_would_catch_an_excluded_source():
    assert dockerignore_excludes(".venv/bin/python", read_dockerignore())
    assert dockerignore_excludes("core/x.py", ["*"])
    assert not dockerignore_excludes("core/x.py", ["*", "!core/"])


@PARAMS
def test_base_image_is_a_cuda12_cudnn9_runtime_image_overridable_for_cpu(dockerfile, name):
    instructions = parse_dockerfile(REPO / dockerfile)
    default = next(i.args for i in instructions if i.keyword == "ARG" and i.args.startswith("BASE_IMAGE="))
    assert re.fullmatch(r"BASE_IMAGE=pytorch/pytorch:[\d.]+-cuda12\.\d+-cudnn9-runtime(@sha256:[0-9a-f]{64})?",
                        default), default
    assert all(i.args.startswith("${BASE_IMAGE}") or i.args.split()[0] in stage_names(instructions)
               for i in instructions if i.keyword == "FROM")


@PARAMS
def test_layer_order_requirements_then_weights_then_code(dockerfile, name):
    instructions = with_args(parse_dockerfile(REPO / dockerfile), name)
    package = load()[name]["package"]
    names = stage_names(instructions)
    first = [i for i in instructions if i.stage == names[0]]
    # The dependency stage copies only requirements/, then installs them under the torch constraints.
    copies = [i.args for i in first if i.keyword == "COPY"]
    assert copies == ["requirements/ /tmp/requirements/"], copies
    keywords = [(i.keyword, i.args) for i in first]
    constraint = next(n for n, (k, a) in enumerate(keywords) if k == "ENV" and "PIP_CONSTRAINT=" in a)
    install = next(n for n, (k, a) in enumerate(keywords) if k == "RUN" and "-r /tmp/requirements/" in a)
    assert constraint < install, "torch must be pinned before requirements are installed"
    # Weights are baked with the package's own bake command.
    bakes = [i for i in instructions if i.keyword == "RUN" and f"python -m {package}.bake" in i.args]
    assert len(bakes) == 1
    # The runtime stage: weights layer first, code after it.
    final = final_stage(instructions)
    order = [i.args for i in final if i.keyword == "COPY"]
    weights = next(n for n, a in enumerate(order) if a.startswith(f"--from={bakes[0].stage} /models"))
    code = [n for n, a in enumerate(order) if a.split()[0] in ("core/", f"{package}/")]
    assert len(code) == 2 and weights < min(code), order


@PARAMS
def test_runtime_contract(dockerfile, name):
    service = load()[name]
    final = final_stage(with_args(parse_dockerfile(REPO / dockerfile), name))
    assert env_value(final, "HF_HUB_OFFLINE") == "1"
    assert env_value(final, "MODELS_DIR") == "/models"
    assert env_value(final, "PORT") == str(service["port"]) and env_value(final, "APP") == service["package"]
    user = [i.args for i in final if i.keyword == "USER"]
    assert user and user[-1].split(":")[0] not in {"0", "root"}
    healthcheck = [i.args for i in final if i.keyword == "HEALTHCHECK"]
    assert healthcheck and "/health" in healthcheck[-1] and "PORT" in healthcheck[-1]
    # The model's defaults, then `python -m $APP` by exec: the server replaces the shell and gets
    # Cloud Run's SIGTERM. No ENTRYPOINT: a job's command (python -m APP.job) replaces the CMD whole.
    assert not [i for i in final if i.keyword == "ENTRYPOINT"]
    cmd = json.loads([i.args for i in final if i.keyword == "CMD"][-1])
    assert cmd == ["/bin/sh", "-c", '. /etc/app-env.sh && exec python -m "$APP"']
    writes = " ".join(i.args for i in final if i.keyword == "RUN")
    assert "/etc/app-env.sh" in writes and f"for pair in {build_args(service)['MODEL_ENV']};" in writes


def test_the_app_env_file_sets_the_baked_model_only_where_the_caller_did_not(tmp_path):
    # The RUN line of the runtime stage, run here with sh: the file it writes, sourced, keeps a
    # variable the caller set (docker run -e, Cloud Run's spec) and fills in the others.
    final = final_stage(parse_dockerfile(REPO / "Dockerfile.cloudrun"))
    (write,) = [i.args for i in final if i.keyword == "RUN" and "/etc/app-env.sh" in i.args]
    script = write.replace("/etc/app-env.sh", str(tmp_path / "app-env.sh"))
    env = {"PATH": "/usr/bin:/bin", "MODEL_ENV": "CLIP_MODEL=ViT-B-32 CLIP_PRETRAINED=openai"}
    subprocess.run(["sh", "-c", script], env=env, check=True, capture_output=True)
    shown = subprocess.run(["sh", "-c", f'. {tmp_path / "app-env.sh"} && echo "$CLIP_MODEL $CLIP_PRETRAINED"'],
                           env={"PATH": "/usr/bin:/bin", "CLIP_PRETRAINED": "laion2b"}, capture_output=True, text=True)
    assert shown.stdout.split() == ["ViT-B-32", "laion2b"]


@PARAMS
def test_torch_is_never_installed_twice(dockerfile, name):
    instructions = parse_dockerfile(REPO / dockerfile)
    runs = " ".join(i.args for i in instructions if i.keyword == "RUN")
    # The base's torch family is frozen into the constraints file and diffed after the install.
    assert "pip list --format=freeze" in runs and "> /etc/pip-constraints.txt" in runs
    assert "diff /etc/pip-constraints.txt -" in runs
    for install in re.findall(r"pip install [^&]*", runs):
        if "torch==" in install:  # only where the base has none (CPU variant), only CPU wheels
            assert '--index-url "${TORCH_CPU_INDEX}"' in install
            assert 'if ! python -c "import torch"' in runs
            args = [i.args for i in instructions if i.keyword == "ARG"]
            assert "TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu" in args


def test_slim_image_puts_cuda12_cublas_and_cudnn9_on_the_loader_path():
    instructions = parse_dockerfile(REPO / "Dockerfile.slim")
    path = env_value(instructions, "LD_LIBRARY_PATH").split(":")
    assert {"/opt/nvidia/cublas/lib", "/opt/nvidia/cudnn/lib", "/usr/local/nvidia/lib64"} <= set(path)
    assert "" not in path, "an empty entry means the current directory"
    runs = " ".join(i.args for i in instructions if i.keyword == "RUN")
    assert 'ln -s "${site}/nvidia" /opt/nvidia' in runs
    assert "libcublas.so.12" in runs and "libcudnn.so.9" in runs  # checked at build time
    assert "apt-get" not in runs, "the slim image installs no system packages"


@PARAMS
def test_every_python_module_the_image_runs_exists(dockerfile, name):
    instructions = with_args(parse_dockerfile(REPO / dockerfile), name)
    package = load()[name]["package"]
    text = " ".join(i.args for i in instructions if i.keyword == "RUN")
    modules = set(re.findall(r'python"?,?\s+"?-m"?,?\s+"?([A-Za-z_][\w.]*)', text)) | {package}
    assert f"{package}.bake" in modules, modules
    for module in modules:
        path = REPO / module.replace(".", "/")
        assert path.with_suffix(".py").exists() or (path / "__main__.py").exists(), (
            f"{dockerfile} runs python -m {module}, which is not in the repo")
