# OpenMedix-R1: every user-facing command. `make help` lists them.
# The first target run on a fresh machine creates .venv and installs the pinned stack.

SHELL := /bin/bash
PY := .venv/bin/python
VENV_STAMP := .venv/.installed-cpu
GPU_STAMP := .venv/.installed-gpu
# CPU torch build for tests/demo; the GPU stack (requirements-gpu.txt) pins torch 2.13.0 for vLLM.
TORCH_CPU := torch==2.14.1 torchvision==0.29.1
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))

OUT ?= outputs
PHANTOM_N ?= 600
SCALE ?= qwen2.5-vl-7b
ACCEL ?= recipes/accelerate/zero3.yaml
NPROC ?= 8
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install install-gpu test lint format demo tiny-model phantom sft coldstart-data coldstart grpo \
	vllm-serve check-vllm eval bench bench-sft bench-rewards bench-grpo bench-data clean

help: ## list every target
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-15s %s\n", $$1, $$2}'

$(VENV_STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_CPU)
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

install: $(VENV_STAMP) ## create .venv and install the CPU stack (idempotent)

install-gpu: ## install the GPU stack (torch 2.13.0 + vLLM 0.31.0) into .venv, for CUDA machines
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements-gpu.txt
	touch $(GPU_STAMP) $(VENV_STAMP)

test: $(VENV_STAMP) ## lint, then the offline CPU test suite
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	$(PY) -m pytest -q -p no:cacheprovider $(ARGS)

lint: $(VENV_STAMP) ## ruff lint + format check
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

format: $(VENV_STAMP) ## ruff format + autofix
	.venv/bin/ruff format . && .venv/bin/ruff check --fix .

tiny-model: $(VENV_STAMP) ## build the tiny offline Qwen2.5-VL into outputs/tiny-qwen2.5-vl
	$(PY) -m recipes.tiny_model --out $(OUT)/tiny-qwen2.5-vl

phantom: $(VENV_STAMP) ## generate the phantom CXR dataset into outputs/phantom
	$(PY) -m data_prep.phantom --n $(PHANTOM_N) --out $(OUT)/phantom

demo: $(VENV_STAMP) ## the whole pipeline on CPU: phantom data -> tiny model -> SFT (later stages append)
	$(PY) -m recipes.demo --out $(OUT) $(ARGS)

sft: $(VENV_STAMP) ## stage 1 on GPUs: accelerate + recipes/$(SCALE)/sft.yaml (SCALE=demo runs on CPU)
	$(call launch,recipes.sft,recipes/$(SCALE)/sft.yaml)

bench: $(VENV_STAMP) ## every benchmark; figures to outputs/bench.json
	$(PY) -m recipes.bench --out $(OUT)/bench.json

bench-sft: $(VENV_STAMP) ## SFT steps/s and peak memory of the demo recipe
	$(PY) -m recipes.bench --only sft --out $(OUT)/bench.json

clean: ## remove run outputs (not .venv)
	rm -rf $(OUT)

# Launch a stage script: plain python for the demo scale, accelerate on GPUs otherwise.
define launch
	if [ "$(SCALE)" = "demo" ]; then $(PY) -m $(1) --config $(2) $(ARGS); \
	else .venv/bin/accelerate launch --config_file $(ACCEL) --num_processes $(NPROC) -m $(1) --config $(2) $(ARGS); fi
endef
