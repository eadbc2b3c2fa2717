# The two commands a newcomer needs: `make demo` and `make test`. Both set up .venv/ first when needed.
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done
TEST_STAMP := $(VENV)/.test-setup-done
DEMO  ?= recipes/pipeline/demo.yaml

.PHONY: setup demo test
setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)

$(TEST_STAMP): $(STAMP) scripts/setup-test.sh
	bash scripts/setup-test.sh
	touch $(TEST_STAMP)

demo: $(STAMP)
	$(PY) -m alignment.pipeline $(DEMO)

test: $(TEST_STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)
