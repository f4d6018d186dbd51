"""Run many gcloud command lines in one Python process: the CLI loads once, then parses each line.

Started by test_gcloud_offline.py with the Cloud SDK's Python: ``python gcloud_batch.py SDK_ROOT``,
command lines on stdin (one per line, starting with ``gcloud``), a JSON list of
``[line, exit_code, stderr]`` on stdout. Each line costs milliseconds instead of a second of
interpreter start-up and imports, which is what keeps the offline check of 100+ lines fast.
"""

import json
import os
import shlex
import sys
import tempfile


def main() -> int:
    """Execute each line with the one CLI; exit codes as the gcloud command would return them."""
    root = sys.argv[1]
    sys.path[:0] = [os.path.join(root, "lib"), os.path.join(root, "lib", "third_party")]
    import gcloud  # the SDK's own entry module: it fixes up sys.path and the google package

    cli = gcloud._import_gcloud_main().CreateCLI([])
    results = []
    for line in sys.stdin.read().splitlines():
        argv = shlex.split(line)
        assert argv[0] == "gcloud", line
        with tempfile.TemporaryFile(mode="w+") as err:
            # gcloud's logger holds the stderr stream from start-up: capture at the descriptor.
            sys.stderr.flush()
            saved = os.dup(2)
            os.dup2(err.fileno(), 2)
            code = 0
            try:
                cli.Execute(argv[1:])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException as exc:  # a crash must show, not pass as "exit 0"
                code = 99
                print(f"gcloud_batch: {exc!r}", file=sys.stderr)
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
            err.seek(0)
            results.append([line, code, err.read()])
    json.dump(results, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
