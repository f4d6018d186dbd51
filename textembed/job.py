"""``python -m textembed.job --input SRC --output DST``: embed each .txt/.jsonl file (docs/events-and-batch-jobs.md)."""

if __name__ == "__main__":
    from core.from_storage import job_entry
    from textembed.app import TEXTEMBED

    job_entry.run(TEXTEMBED, __doc__.splitlines()[0])
