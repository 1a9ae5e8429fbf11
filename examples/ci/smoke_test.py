"""Smoke-test a deployment: the answers of `mlops-lab score` must equal the expected ones."""

import json
import subprocess
import sys

deployment, payload = sys.argv[1], sys.argv[2]
with open(payload) as f:
    smoke = json.load(f)
out = subprocess.run(
    ["mlops-lab", "score", deployment, "--data", json.dumps({"data": smoke["data"]})],
    capture_output=True, text=True, check=True,
).stdout
got = json.loads(out)
if got != smoke["expected"]:
    sys.exit(f"smoke test failed: got {got}, expected {smoke['expected']}")
print(f"smoke test passed: {len(got)} rows")
