"""``python -m worker.job --input SRC --output DST``: transcribe every recording of SRC in a Cloud Run Jobs task.

Output: per input ``DST/<name>.srt``, ``.vtt`` and ``.json`` (verbose_json: text, segments,
language, duration), where ``<name>`` is the input's path as listed without its extension; the
``.json`` is written last, so its presence means the input is done and a retried task skips it.
``DST/failures/part-....jsonl`` lists what failed; exit status 1 when anything failed.
"""

from __future__ import annotations

from core import batch_job, storage
from core.backend import ModelRunner
from core.logs import configure_logging
from worker.app import make_backend
from worker.service import WhisperService
from worker.settings import WorkerSettings

AUDIO_SUFFIXES = (".wav", ".mp3", ".m4a", ".mp4", ".flac", ".ogg", ".oga", ".opus", ".webm", ".aac", ".mkv",
                  ".mov", ".wma", ".amr")
# Whole-file uploads to the HTTP route are capped by the request limit; a job reads from storage,
# so it takes larger files (the duration limit, MAX_AUDIO_SECONDS, still applies).
MAX_INPUT_BYTES = 2 * 1024 ** 3


def start_service(settings: WorkerSettings) -> WhisperService:
    """The same backend, runner and batcher as the HTTP worker, ready to transcribe."""
    backend = make_backend(settings)
    backend.check_weights()
    runner = ModelRunner(backend, settings, name="whisper").start()
    batch_job.wait_until_ready(runner)
    return WhisperService(runner, settings, reserve=batch_job.memory_budget(settings).reserve)


def output_stem(name: str) -> str:
    """``talks/a.m4a`` -> ``talks/a``; a manifest's ``gs://b/x/y.wav`` -> ``b/x/y``."""
    for scheme in (storage.GCS_SCHEME, storage.FILE_SCHEME):
        if name.startswith(scheme):
            name = name[len(scheme):]
    name = name.lstrip("/")
    stem, dot, suffix = name.rpartition(".")
    return stem if dot and "/" not in suffix else name


def main(argv: list[str] | None = None) -> int:
    """Transcribe this task's shard of the inputs; returns the exit status."""
    parser = batch_job.common_arguments("python -m worker.job", __doc__.splitlines()[0])
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="a /transcribe option for every input, e.g. --option language=en (repeatable)")
    args = parser.parse_args(argv)
    batch_job.require_locations(parser, args)
    raw_options: dict[str, list[str]] = {}
    for option in args.option:
        name, equals, value = option.partition("=")
        if not equals:
            parser.error(f"--option {option!r}: expected NAME=VALUE")
        raw_options.setdefault(name.strip(), []).append(value)
    settings = WorkerSettings.from_env()
    configure_logging(settings.log_level)
    shard = batch_job.Shard.from_env()
    inputs = shard.take(batch_job.list_inputs(args.input, AUDIO_SUFFIXES))
    todo = [(location, name) for location, name in inputs
            if not storage.exists(storage.join(args.output, output_stem(name) + ".json"))]
    failures: list[dict] = []
    service = start_service(settings) if todo else None
    # Started after the model is ready: the rate it reports is the task's steady throughput.
    progress = batch_job.Progress(len(inputs), shard, unit="files", already_done=len(inputs) - len(todo))
    if service is not None:
        options = service.options(raw_options)  # a bad option stops the task before any work
        workers = args.workers or 2 * service.runner.batcher.max_batch_size

        def transcribe_one(item: tuple[str, str]) -> None:
            location, name = item
            transcript = service.transcribe(storage.read_bytes(location, MAX_INPUT_BYTES), options)
            stem = storage.join(args.output, output_stem(name))
            for fmt, suffix in (("srt", ".srt"), ("vtt", ".vtt"), ("verbose_json", ".json")):
                body, content_type = service.render(transcript, fmt)
                storage.write_bytes(stem + suffix, body.encode("utf-8"), content_type=content_type)

        def finished(item: tuple[str, str], _result, error: BaseException | None) -> None:
            if error is not None:
                failures.append(batch_job.error_record(item[1], error))
            progress.advance(error is None)

        batch_job.run_pool(todo, transcribe_one, workers, finished)
    batch_job.write_failures(args.output, shard, failures)
    progress.close()
    return 1 if failures else 0


if __name__ == "__main__":
    batch_job.exit_with(main)
