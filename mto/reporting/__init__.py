"""`mto report`'s parts, one job each: `records` (gathering runs, averaging only like ones), `tables`
(the table as CSV, Markdown, console, HTML), `plots` (the figures), `mi` (the maskability index against
the few-shot size). The command itself is mto/stages/report.py; `check=` is mto/stages/check.py."""
