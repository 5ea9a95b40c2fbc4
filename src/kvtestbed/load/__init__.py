"""Load from the controller: run kvload's Locust users headless (locally or as a master of workers) and keep
what they report. The users themselves live in loadtests/ (package kvload), which also runs on loadgen hosts."""
