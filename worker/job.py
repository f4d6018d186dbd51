"""``python -m worker.job --input SRC --output DST``: transcribe every recording of SRC in a Cloud Run Jobs task.

Output: per input ``DST/<name>.srt``, ``.vtt`` and ``.json`` (verbose_json: text, segments,
language, duration), where ``<name>`` is the input's full path as listed, extension included
(``talks/a.wav`` -> ``talks/a.wav.json``), so ``a.wav`` and ``a.mp3`` get a transcript each; the
``.json`` is written last, so its presence means the input is done and a retried task skips it.
``DST/failures/part-....jsonl`` lists what failed; exit status 1 when anything failed. The job
itself (listing, shards, resume, pool) is core/from_storage/batch_job.py.
"""

from __future__ import annotations

from core.from_storage import batch_job, storage
from core.from_storage.batch_results import FilesPerInput
from core.model.runner import ModelRunner
from core.web.logs import configure_logging
from worker.backends import make_backend
from worker.formats import result_files
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

    def start():
        service = start_service(settings)
        options = service.options(raw_options)  # a bad option stops the task before any work

        def transcribe_one(location: str, _name: str) -> dict[str, tuple[bytes, str]]:
            return result_files(service.transcribe(storage.read_bytes(location, MAX_INPUT_BYTES), options))

        return transcribe_one, service.runner.batcher.max_batch_size

    return batch_job.run_job(args.input, args.output, suffixes=AUDIO_SUFFIXES, unit="files", workers=args.workers,
                             start=start, make_results=lambda _shard, _names: FilesPerInput(args.output))


if __name__ == "__main__":
    batch_job.exit_with(main)
