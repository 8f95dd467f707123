#!/usr/bin/env python3
"""Print the `tests:` entries of a driver file from the wmbusmeters test corpus.

Usage: scripts/driver_tests_from_corpus.py DRIVER [CORPUS]

DRIVER is wmbusmeters' canonical driver name (the corpus's `driver` key). The output is YAML
(expected outputs as JSON flow mappings, which YAML reads as they are) to paste under `tests:`
in drivers/DRIVER.yaml. The corpus is tests/fixtures/wmbus/wmbusmeters_driver_tests.jsonl.
"""
import json
import sys

driver = sys.argv[1]
corpus = sys.argv[2] if len(sys.argv) > 2 else "tests/fixtures/wmbus/wmbusmeters_driver_tests.jsonl"
for n, line in enumerate(open(corpus, encoding="utf-8"), 1):
    case = json.loads(line)
    if case["driver"] != driver:
        continue
    expected = dict(case["expected_json"])
    expected.pop("timestamp", None)
    print(f"  - name: {json.dumps(case['name'])}")
    print(f"    id: {json.dumps(case['id'])}")
    if case["key"] != "NOKEY":
        print(f"    key: {json.dumps(case['key'])}")
    if case.get("driver_arg") and case["driver_arg"] != driver:
        print(f"    driver: {json.dumps(case['driver_arg'])}")
    print(f"    comment: \"corpus line {n}\"")
    print("    telegrams:")
    for t in case["preceding_telegrams"] + [case["telegram"]]:
        print(f"      - {t}")
    print(f"    expected: {json.dumps(expected, ensure_ascii=False)}")
