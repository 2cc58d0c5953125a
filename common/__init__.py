"""The bottom floor: what every package of the project uses and nothing of the project
imports into it. The error type for bad input (`common.errors`) and how a run's statistics and
metrics are printed (`common.log_format`), which the trainers, the logger and the entry points
share. See docs/design.md, "Layers"."""
