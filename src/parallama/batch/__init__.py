"""`parallama batch` as a library: many prompts through one FleetClient, pipelined, written as they finish,
resumable, and scored against expected answers.

    records = read_records("questions.jsonl")          # validated whole; InputErrors name file:line
    with ResultsFile.open("answers.jsonl", records) as out:
        todo = [r for r in records if r.id not in out.done]
        async with FleetClient("config.json") as client:
            batch = Batch(client, todo, write=out.write, prompts=len(records),
                          before=[(r, out.done[r.id]) for r in records if r.id in out.done])
            await batch.run()
        summary = batch.summary()

`records.py` reads the input, `output.py` writes (and resumes) the output, `pipeline.py` runs the prompts and
keeps the counts; the scores come from `parallama.scoring`.
"""

from .output import JsonLines, ResultsFile, first_line_is_a_result, result_line, same_file
from .pipeline import Batch, BatchSummary, ServerUsage, default_concurrency
from .records import BatchRecord, parse_records, read_records

__all__ = ["Batch", "BatchRecord", "BatchSummary", "JsonLines", "ResultsFile", "ServerUsage", "default_concurrency",
           "first_line_is_a_result", "parse_records", "read_records", "result_line", "same_file"]
