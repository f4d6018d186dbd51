"""``python -m worker.job --input SRC --output DST``: transcribe every recording of SRC in a Cloud Run Jobs task.

Output: per input ``DST/<name>.srt``, ``.vtt`` and ``.json`` (verbose_json: text, segments,
language, duration), where ``<name>`` is the input's full path as listed, extension included
(``talks/a.wav`` -> ``talks/a.wav.json``), so ``a.wav`` and ``a.mp3`` get a transcript each; the
``.json`` is written last, so its presence means the input is done and a retried task skips it.
``DST/failures/part-....jsonl`` lists what failed; exit status 1 when anything failed.
``--option language=en`` (repeatable) sets a /transcribe option for every input. The job itself is
core/from_storage/job_entry.py and batch_job.py.
"""

from __future__ import annotations

from worker.formats import result_files


def transcribe_file(service, data: bytes, _name: str, options) -> dict[str, tuple[bytes, str]]:
    """One recording's result files (json, srt, vtt)."""
    return result_files(service.transcribe(data, options))


if __name__ == "__main__":
    from core.from_storage import job_entry
    from worker.app import WHISPER

    job_entry.run(WHISPER, __doc__.splitlines()[0])
