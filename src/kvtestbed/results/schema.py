"""summary.json, schema version 1, as a JSON Schema (checked with jsonschema before the file is written).

Required is what every run has, even one that failed before any load (run, figures); the rest is typed when
present. Unknown keys are allowed at every level so that a writer adding a field does not lose a run's data at its
very end; docs/results.md lists the fields the report reads.
"""

from __future__ import annotations

from typing import Any

SCHEMA_VERSION = 1

NUMBER: dict[str, Any] = {"type": "number"}
NUMBER_OR_NULL: dict[str, Any] = {"type": ["number", "null"]}
STRING_OR_NULL: dict[str, Any] = {"type": ["string", "null"]}
COUNT: dict[str, Any] = {"type": "integer", "minimum": 0}
SPAN: dict[str, Any] = {"type": "array", "items": NUMBER, "minItems": 2, "maxItems": 2}

FAULT: dict[str, Any] = {
    "type": "object",
    "required": ["id", "kind", "target", "t_inject"],
    "properties": {
        "id": {"type": "string"},
        "kind": {"type": "string"},
        "target": {"type": "string"},
        "hosts": {"type": "array", "items": {"type": "string"}},
        "params": {"type": "object"},
        "t_inject": NUMBER,
        "t_heal": NUMBER_OR_NULL,
        "healed": {"type": "boolean"},
        "verified": {"type": "boolean"},
        "deadman": STRING_OR_NULL,
        "error": STRING_OR_NULL,
        "timings": {"type": "object", "additionalProperties": NUMBER},
    },
}

CLIENT: dict[str, Any] = {
    "type": "object",
    "required": ["attempted", "ok", "fail", "unknown"],
    "properties": {
        "strategy": {"type": "string"},
        "target": {"type": "string"},
        "attempted": COUNT,
        "ok": COUNT,
        "fail": COUNT,
        "unknown": COUNT,
        "lost": COUNT,
        "lost_sample": {"type": "array", "items": {"type": "string"}},
        "unexpected": COUNT,
        "unknown_applied": COUNT,
        "unavailability_s": NUMBER,
        "unavailability_window": {"oneOf": [SPAN, {"type": "null"}]},
        "failover_s": NUMBER_OR_NULL,
        "failover_to": STRING_OR_NULL,
        "latency_us": {"type": "object", "additionalProperties": {"type": ["integer", "null"]}},
        "ops_per_s": NUMBER,
    },
}

SUMMARY_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["schema", "run", "figures"],
    "properties": {
        "schema": {"const": SCHEMA_VERSION},
        "run": {
            "type": "object",
            "required": ["id", "scenario", "started", "status"],
            "properties": {
                "id": {"type": "string"},
                "scenario": {"type": "string"},
                "description": {"type": "string"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "repeat": {"type": "integer", "minimum": 0},
                "started": {"type": "string"},
                "ended": STRING_OR_NULL,
                "t0_unix": NUMBER,
                "duration_s": NUMBER_OR_NULL,
                "status": {"enum": ["passed", "slo-violated", "failed", "interrupted"]},
                "error": STRING_OR_NULL,
                "overrides": {"type": "object"},
            },
        },
        "inventory": {
            "type": "object",
            "properties": {
                "hosts": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "properties": {
                            "address": {"type": "string"},
                            "profile": STRING_OR_NULL,
                            "arch": STRING_OR_NULL,
                            "groups": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                }
            },
        },
        "engines": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["engine"],
                "properties": {
                    "engine": {"enum": ["redis", "valkey", "keydb", "nats"]},
                    "version": STRING_OR_NULL,
                    "topology": {"type": "string"},
                    # `replicas: {group: N}` in the scenario: what the run left attached and stopped
                    "replicas_attached": COUNT,
                    "replicas_stopped": {"type": "array", "items": {"type": "string"}},
                    "primary": {"type": "string"},
                },
            },
        },
        "phases": {"type": "object", "additionalProperties": SPAN},
        "faults": {"type": "array", "items": FAULT},
        "clients": {"type": "object", "additionalProperties": CLIENT},
        "servers_failover": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["source", "t"],
                "properties": {"source": {"type": "string"}, "t": NUMBER, "from": STRING_OR_NULL, "to": STRING_OR_NULL},
            },
        },
        "load": {"type": "object"},
        "accounting": {"type": "object"},
        "benchmarks": {"type": "object"},
        "slo": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["figure", "op", "threshold", "value", "ok"],
                "properties": {
                    "figure": {"type": "string"},
                    "op": {"enum": ["<=", ">=", "<", ">", "=="]},
                    "threshold": NUMBER,
                    "value": NUMBER_OR_NULL,
                    "ok": {"type": "boolean"},
                    "worst": STRING_OR_NULL,
                },
            },
        },
        "figures": {"type": "object", "additionalProperties": NUMBER},
    },
}
