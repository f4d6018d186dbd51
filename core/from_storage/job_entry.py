"""``python -m <package>.job``: a declared service's Cloud Run Jobs entry (core/declaration.py).

The app declares how one input is run (``JobDeclaration``); this builds the command line, the
same backend, runner and batcher as the HTTP service, and hands both to ``batch_job.run_job``.
"""

from __future__ import annotations

import dataclasses

from core.from_storage import batch_job, storage
from core.from_storage.batch_results import FilesPerInput, JsonlShard
from core.model.runner import ModelRunner
from core.web.logs import configure_logging
from core.web.metrics import declare_units


def start_service(declaration, settings):
    """The declared service on its own runner, loaded and warm."""
    backend = declaration.make_backend(settings)
    backend.check_weights()
    runner = ModelRunner(backend, settings, name=declaration.name).start()
    batch_job.wait_until_ready(runner)
    return declaration.make_service(runner, settings, batch_job.memory_budget(settings))


def parse_options(parser, pairs: list[str]) -> dict[str, list[str]]:
    """``--option NAME=VALUE`` pairs -> {name: [values]} (the shape form fields have)."""
    options: dict[str, list[str]] = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals:
            parser.error(f"--option {pair!r}: expected NAME=VALUE")
        options.setdefault(name.strip(), []).append(value)
    return options


def main(declaration, description: str, argv: list[str] | None = None) -> int:
    """Run this task's shard of the inputs; returns the exit status."""
    job = declaration.job
    parser = batch_job.common_arguments(f"python -m {declaration.package}.job", description)
    if job.prepare is not None:
        parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                            help="an option for every input, as the HTTP route takes it (repeatable)")
    if job.results == "jsonl":
        parser.add_argument("--checkpoint-every", type=int, default=500,
                            help="rewrite the shard after this many new results (resume point)")
    args = parser.parse_args(argv)
    batch_job.require_locations(parser, args)
    raw_options = parse_options(parser, getattr(args, "option", []))
    settings = declaration.settings.from_env()
    if settings.max_batch_size is None and job.batch_size:
        settings = dataclasses.replace(settings, max_batch_size=job.batch_size)
    configure_logging(settings.log_level)
    declare_units(None, declaration.units)  # the job door's input counters
    max_input_bytes = job.max_input_bytes or settings.max_request_bytes

    def start():
        service = start_service(declaration, settings)
        options = job.prepare(service, raw_options) if job.prepare else None  # a bad option stops the task now

        def run_one(location: str, name: str):
            return job.run(service, storage.read_bytes(location, max_input_bytes), name, options)

        return run_one, service.runner.batcher.max_batch_size

    def make_results(shard, names):
        if job.results == "files":
            return FilesPerInput(args.output)
        return JsonlShard(storage.join(args.output, f"{shard.name}.jsonl"), names, args.checkpoint_every)

    return batch_job.run_job(args.input, args.output, suffixes=job.suffixes, unit=job.unit, workers=args.workers,
                             start=start, make_results=make_results)


def run(declaration, description: str) -> None:
    """``if __name__ == "__main__"`` of an app's job.py: run and exit with the status."""
    batch_job.exit_with(lambda: main(declaration, description))
