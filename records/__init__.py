"""Record entries of the speedrun: run logs → statistics → dated entry folders and their tables.

`records.logs.parse_log` reads a run log (this repo's or the public modded-nanogpt speedrun's);
`records.entries` builds, checks and writes entries; `records.stats` holds the tests. CLI: `python -m records`.
"""
