"""alerts/*.yaml: valid Cloud Monitoring AlertPolicy resources covering what the service needs watched.

gcloud 528 sends --policy-from-file unchecked to the API once it is authenticated (offline it stops
at authentication first), so the files are checked here: parsed into the Monitoring v3 AlertPolicy
message with the very parser gcloud uses (its bundled apitools messages), and every field, nested
ones included, must be one the API knows; then the thresholds docs/deploy.md (Alerts) promises.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.shipping.helpers import REPO

pytestmark = pytest.mark.unit
ALERTS = sorted((REPO / "alerts").glob("*.yaml"))
GCLOUD = shutil.which("gcloud")
DURATION = re.compile(r"^\d+s$")

# Run with gcloud's own Python and modules: each file -> unknown field paths (or a parse error).
VALIDATOR = r'''
import json, os, sys
root = sys.argv[1]
sys.path[:0] = [os.path.join(root, "lib"), os.path.join(root, "lib", "third_party")]
import gcloud  # the SDK's entry module fixes sys.path up
from apitools.base.protorpclite import messages as protorpc
from googlecloudsdk.api_lib.util import apis
from googlecloudsdk.command_lib.monitoring import util

policy_class = apis.GetMessagesModule("monitoring", "v3").AlertPolicy

def unknown(message, path):
    found = [path + name for name in message.all_unrecognized_fields()]
    for field in message.all_fields():
        values = getattr(message, field.name)
        for value in values if field.repeated else [values]:
            if isinstance(value, protorpc.Message):
                found += unknown(value, path + field.name + ".")
    return found

report = {}
for name in sys.argv[2:]:
    try:
        report[name] = unknown(util.MessageFromString(open(name).read(), policy_class, "AlertPolicy"), "")
    except Exception as exc:
        report[name] = ["parse error: " + str(exc)]
print(json.dumps(report))
'''


def sdk_root() -> Path | None:
    if GCLOUD is None:
        return None
    root = Path(GCLOUD).resolve().parent.parent
    return root if (root / "lib" / "googlecloudsdk").is_dir() else None


def validate(paths: list[Path]) -> dict[str, list[str]]:
    """Unknown fields (or a parse error) per file, from gcloud's own AlertPolicy parser."""
    root = sdk_root()
    bundled = root / "platform" / "bundledpythonunix" / "bin" / "python3"
    python = str(bundled) if bundled.exists() else "python3"
    result = subprocess.run([python, "-c", VALIDATOR, str(root), *map(str, paths)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def policies() -> dict[str, dict]:
    return {path.name: yaml.safe_load(path.read_text()) for path in ALERTS}


def conditions(policy: dict) -> list[dict]:
    return [c["conditionThreshold"] for c in policy["conditions"]]


needs_sdk = pytest.mark.skipif(sdk_root() is None, reason="Google Cloud SDK (gcloud) not installed")


@needs_sdk
def test_every_policy_parses_as_an_alert_policy_with_no_unknown_field():
    report = validate(ALERTS)
    assert set(report) == {str(p) for p in ALERTS}
    assert all(not problems for problems in report.values()), report


@needs_sdk
def test_the_validator_would_catch_a_typo_a_bad_enum_and_broken_yaml(tmp_path):
    source = (REPO / "alerts" / "5xx-ratio.yaml").read_text()
    typo = tmp_path / "typo.yaml"
    typo.write_text(source.replace("thresholdValue:", "treshholdValue:"))
    enum = tmp_path / "enum.yaml"
    enum.write_text(source.replace("COMPARISON_GT", "COMPARISON_GREATER"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("displayName: [unclosed\n")
    report = validate([typo, enum, broken])
    assert report[str(typo)] == ["conditions.conditionThreshold.treshholdValue"]
    assert report[str(enum)] == ["conditions.conditionThreshold.comparison"]
    assert report[str(broken)][0].startswith("parse error")


def test_the_five_promised_policies_exist_with_their_thresholds():
    by_metric = {}
    for policy in policies().values():
        for condition in conditions(policy):
            metric = re.search(r'metric\.type = "([^"]+)"', condition["filter"]).group(1)
            by_metric[metric] = condition
    ratio = by_metric["run.googleapis.com/request_count"]
    assert 'response_code_class = "5xx"' in ratio["filter"] and "5xx" not in ratio["denominatorFilter"]
    assert ratio["thresholdValue"] == 0.05
    latency = by_metric["run.googleapis.com/request_latencies"]
    assert latency["aggregations"][0]["perSeriesAligner"] == "ALIGN_PERCENTILE_99"
    gpu = by_metric["run.googleapis.com/container/gpu/utilizations"]
    assert gpu["thresholdValue"] == 0.95 and gpu["duration"] == "300s" and gpu["comparison"] == "COMPARISON_GT"
    jobs = by_metric["run.googleapis.com/job/completed_execution_count"]
    assert 'result = "failed"' in jobs["filter"] and jobs["thresholdValue"] == 0
    unacked = by_metric["pubsub.googleapis.com/subscription/oldest_unacked_message_age"]
    # The script names push subscriptions <service>-events-push; the policy must match that.
    assert '".*-events-push"' in unacked["filter"]
    assert "pubsub.googleapis.com/subscription/num_undelivered_messages" in by_metric  # dead letters


def test_policies_watch_only_this_deployment_and_are_well_formed():
    # The labels the filters select on: every spec carries app=gpu-inference and component=<table name>.
    script = (REPO / "scripts" / "render_spec.py").read_text()
    assert 'LABELS = {"app": "gpu-inference"}' in script and '"component": service_key(service)' in script
    names = []
    for name, policy in policies().items():
        names.append(policy["displayName"])
        assert policy["combiner"] in {"OR", "AND"} and policy["documentation"]["content"].strip()
        for condition in conditions(policy):
            assert DURATION.match(condition["duration"]), name
            for aggregation in condition["aggregations"] + condition.get("denominatorAggregations", []):
                assert DURATION.match(aggregation["alignmentPeriod"]), name
            if "cloud_run" in condition["filter"]:
                assert 'metadata.user_labels.app = "gpu-inference"' in condition["filter"], name
    assert len(set(names)) == len(names), "the script finds a policy again by its display name"


def test_the_script_reads_the_display_name_the_api_sees():
    for path in ALERTS:
        result = subprocess.run(
            ["bash", "-c", f'source <(sed -n "/^policy_display_name()/,/^}}/p" {REPO}/deploy-cloudrun.sh); '
                           f'policy_display_name {path}'], capture_output=True, text=True)
        assert result.stdout.rstrip("\n") == yaml.safe_load(path.read_text())["displayName"], path
