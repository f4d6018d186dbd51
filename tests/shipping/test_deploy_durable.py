"""deploy-cloudrun.sh durable SERVICE: topic, dead letter, OIDC push to /events/pubsub, IAM, JOB_TOPIC.

The real gcloud parses these lines offline with every other scenario (test_gcloud_offline.py).
"""

from __future__ import annotations

from tests.shipping.helpers import TARGET, dry_run_lines, flag_values, run_deploy
from tests.shipping.test_deploy_script import container, specs


def commands(lines: list[str], *words: str) -> list[list[str]]:
    import shlex

    return [argv for argv in map(shlex.split, lines) if argv[1:1 + len(words)] == list(words)]


def test_durable_mode_wires_the_topic_the_push_and_the_service(tmp_path):
    lines = dry_run_lines(tmp_path, *TARGET, "durable", "worker", extra_env={"JOB_STORE_BUCKET": "my-jobs"})
    (push,) = commands(lines, "pubsub", "subscriptions", "create", "whisper-worker-jobs-push")
    assert flag_values(push, "--topic") == ["whisper-worker-jobs"]
    assert flag_values(push, "--push-endpoint")[0].endswith("/events/pubsub?token=API_KEY")
    assert flag_values(push, "--dead-letter-topic") == ["whisper-worker-jobs-dead-letter"]
    (publisher,) = [c for c in commands(lines, "pubsub", "topics", "add-iam-policy-binding")
                    if c[4] == "whisper-worker-jobs"]
    assert flag_values(publisher, "--role") == ["roles/pubsub.publisher"]  # the service publishes its jobs
    # JOB_TOPIC goes into the service's spec, which is applied again (specs as files).
    env = {e["name"]: e.get("value") for e in container(specs(lines)["whisper-worker"])["env"]}
    assert env["JOB_TOPIC"] == "projects/demo-project-123/topics/whisper-worker-jobs"
    assert not commands(lines, "run", "services", "update")


def test_a_deploy_keeps_durable_mode_only_while_deploy_env_says_so(tmp_path):
    def topic(**extra) -> str | None:
        lines = dry_run_lines(tmp_path, *TARGET, "deploy", "worker", extra_env={"JOB_STORE_BUCKET": "my-jobs", **extra})
        env = {e["name"]: e.get("value") for e in container(specs(lines)["whisper-worker"])["env"]}
        return env.get("JOB_TOPIC")

    assert topic(WORKER_DURABLE="true") == "projects/demo-project-123/topics/whisper-worker-jobs"
    assert topic() is None


def test_durable_mode_is_refused_without_a_shared_job_store(tmp_path):
    result = run_deploy(tmp_path, "--dry-run", *TARGET, "durable", "clip")
    assert result.returncode == 2 and "JOB_STORE_BUCKET" in result.stderr
