"""Run schemathesis against a running service: no 5xx, and every answer matches its document."""

from __future__ import annotations

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

# Not positive_data_acceptance: random bytes are a schema-valid "image" the service rightly rejects.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def fuzz_service(url: str, max_examples: int, headers: dict | None = None) -> list[str]:
    """Generated requests for every operation of ``url``'s /openapi.json; returns the operations run."""
    headers = headers or {}
    schema = schemathesis.openapi.from_url(url + "/openapi.json", headers=headers, timeout=10)
    session = requests.Session()
    ran = []
    for result in schema.get_all_operations():
        operation = result.ok()

        # derandomize: the same examples every run, so a failure is reproducible, not flaky.
        @settings(max_examples=max_examples, derandomize=True, deadline=None, database=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case):
            case.call_and_validate(base_url=url, session=session, headers=headers, checks=CHECKS, timeout=60)

        check()
        ran.append(operation.label)
    return ran
