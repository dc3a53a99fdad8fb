"""The `chatfile` command: build, run, inspect, verify, bench."""
