# Two commands on a fresh machine:
#   make demo   - bootstrap, start a local QFieldCloud-shaped stack, scale it with playbooks/scale.yml
#   make test   - bootstrap, then ruff, ansible-lint, ansible-test sanity, molecule, unit and integration tests
SHELL := /bin/bash
REPLICAS ?= 4
NAME ?= qfcdemo

.PHONY: bootstrap demo demo-down test lint sanity molecule pytest unit bench ee release

bootstrap:
	bash scripts/bootstrap.sh

demo: bootstrap
	bash scripts/demo.sh --name $(NAME) $(REPLICAS)

demo-down:
	bash scripts/demo.sh --name $(NAME) --down

test: bootstrap
	bash scripts/test.sh

lint: bootstrap
	bash scripts/test.sh lint

sanity: bootstrap
	bash scripts/sanity.sh

molecule: bootstrap
	bash scripts/test.sh molecule

pytest: bootstrap
	bash scripts/test.sh pytest

# every unit test, under a minute: the inner loop
unit: bootstrap
	bash scripts/test.sh unit

bench: bootstrap
	.venv/bin/python bench/bench_scale.py --write
	.venv/bin/python bench/bench_queue.py --write
	.venv/bin/python bench/bench_throughput.py --write
	.venv/bin/python bench/bench_fleet.py --write
	.venv/bin/python bench/bench_autoscale.py --write

# The execution environment's build context (./context) from a tarball of this checkout; see execution-environment.yml.
ee: bootstrap
	bash scripts/ee.sh

# A release: VERSION=x.y.z make release -> galaxy.yml version, changelog from changelogs/fragments, tarball in dist/.
release: bootstrap
	bash scripts/release.sh $(VERSION)
