"""The streaming service: faust app, per-record processing, state cache, publisher, topics."""
