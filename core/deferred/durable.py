"""Durable mode (``JOB_TOPIC``): accepted jobs go through Pub/Sub, Google Cloud's own queue.

The accepting process writes the job's request and record to the shared store (gs:// or
redis://), publishes ``{"job_id"}`` to the topic and answers 202; it does not run the job. The
topic's push subscription delivers the message to ``POST /events/pubsub`` of the service, where
``AsyncJobs.run_published`` runs the job from its stored request and answers 2xx once its result
is stored (the callback goes out from there, with its retries). A push that never gets its 2xx
(the instance was lost mid-job) is delivered again by Pub/Sub, to any instance; after
``JOB_MAX_ATTEMPTS`` deliveries the job ends ``failed`` ``worker_lost``, and a message that still
cannot be handled goes to the subscription's dead-letter topic. No queue of our own: Pub/Sub's
redelivery carries the job across lost instances. ``deploy-cloudrun.sh durable`` sets it up.

Publishing is one REST call (``topics.publish``) with the instance's credentials, or plain HTTP
to the emulator when ``PUBSUB_EMULATOR_HOST`` is set.
"""

from __future__ import annotations

import base64
import json
import os
import threading

JOB_ATTRIBUTE = "inference_job"  # marks a job message among the storage notifications on /events/pubsub
PUBLISH_TIMEOUT_S = 10.0


class Publisher:
    """Publishes job messages to one topic."""

    def __init__(self, topic: str):
        self.topic = topic
        self._session = None
        self._lock = threading.Lock()

    def _post(self, url: str, body: dict):
        emulator = os.environ.get("PUBSUB_EMULATOR_HOST")
        if emulator:
            import requests

            return requests.post(f"http://{emulator}/v1/{url}", json=body, timeout=PUBLISH_TIMEOUT_S)
        with self._lock:
            if self._session is None:  # made after fork, once per process
                import google.auth
                from google.auth.transport.requests import AuthorizedSession

                credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/pubsub"])
                self._session = AuthorizedSession(credentials)
        return self._session.post(f"https://pubsub.googleapis.com/v1/{url}", json=body, timeout=PUBLISH_TIMEOUT_S)

    def publish(self, job_id: str) -> None:
        """Publish one job; raises on any failure (the job is then refused, not accepted)."""
        data = base64.b64encode(json.dumps({"job_id": job_id}).encode()).decode()
        answer = self._post(f"{self.topic}:publish",
                            {"messages": [{"data": data, "attributes": {JOB_ATTRIBUTE: job_id}}]})
        answer.raise_for_status()


def published_job(body) -> tuple[str, int] | None:
    """(job_id, delivery attempt) of a Pub/Sub push envelope carrying a job message, else None."""
    message = body.get("message") if isinstance(body, dict) else None
    attributes = message.get("attributes") if isinstance(message, dict) else None
    job_id = attributes.get(JOB_ATTRIBUTE) if isinstance(attributes, dict) else None
    if not isinstance(job_id, str):
        return None
    attempt = body.get("deliveryAttempt", 1)  # present once the subscription has a dead-letter policy
    return job_id, attempt if isinstance(attempt, int) and attempt > 0 else 1
