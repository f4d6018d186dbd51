"""Load Cloud Run specs into gcloud's own run v1 message classes, offline, as `replace` does first.

Started by test_specs.py with the Cloud SDK's Python: ``python gcloud_spec_check.py SDK_ROOT FILE...``;
prints a JSON list of ``[file, kind, error or null, the message as a dict]``. gcloud's
``services replace`` / ``jobs replace`` read the YAML and call DictToMessageWithErrorCheck on it
before any API call; an unknown field or a wrong type fails there, and here.
"""

import json
import os
import sys


def main() -> int:
    """Check each file; exit 0 (the errors are in the output)."""
    root = sys.argv[1]
    sys.path[:0] = [os.path.join(root, "lib"), os.path.join(root, "lib", "third_party")]
    import gcloud  # noqa: F401  the SDK's entry module fixes up sys.path and the google package
    from apitools.base.py import encoding
    from googlecloudsdk.api_lib.util import apis
    from googlecloudsdk.api_lib.util import messages as messages_util
    from googlecloudsdk.core import yaml

    messages = apis.GetMessagesModule("run", "v1")
    results = []
    for path in sys.argv[2:]:
        data = yaml.load_path(path)
        kind = data.get("kind")
        cls = {"Service": messages.Service, "Job": messages.Job}.get(kind)
        try:
            if cls is None:
                raise ValueError(f"unknown kind {kind}")
            message = messages_util.DictToMessageWithErrorCheck(data, cls)
            results.append([path, kind, None, encoding.MessageToPyValue(message)])
        except Exception as exc:  # every failure is a result, not a crash
            results.append([path, kind, f"{type(exc).__name__}: {exc}", None])
    json.dump(results, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
