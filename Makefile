# The two commands README opens with. Both work on a fresh machine.
.PHONY: demo test bench

demo:  ## install and run the main job end to end on the embedded defaults
	bash .ci/setup.sh examples
	.venv/bin/python examples/quickstart.py

test:  ## install, start PostgreSQL, run the whole test suite
	bash .ci/test.sh

bench:  ## the benchmarks against MLflow and the other peers (see bench/README.md)
	bash .ci/setup.sh bench
	command -v wrk >/dev/null || (apt-get update -q && apt-get install -y -q wrk)
	.venv/bin/python bench/registry.py
	.venv/bin/python bench/serving.py
	.venv/bin/python bench/monitoring.py
	.venv/bin/python bench/batch.py
