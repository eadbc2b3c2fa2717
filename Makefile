# The two commands a newcomer needs: `make demo` and `make test`. Both set up .venv/ first when needed.
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done
DEMO  ?= recipes/pipeline/demo.yaml

.PHONY: setup demo test
setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m alignment.pipeline $(DEMO)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)
