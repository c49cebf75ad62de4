# Two commands do all set-up on a fresh machine:
#   make demo   builds the virtual environment (once) and runs the main job on the built-in demo data
#   make test   builds the virtual environment (once) and runs the test suite
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-all bench clean-cache

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned: the CPU wheel, not the multi-GB CUDA build
	$(BIN)/python -m pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mepipe build --dataset demo --for all
	$(BIN)/mepipe info
	$(BIN)/mepipe show demo/sub01/EP04_01f --artifact flow --out cache/demo/flow.png
	$(BIN)/mepipe train --model ststnet --dataset demo --seeds 0,1,2 --out cache/demo/runs --name ststnet-demo --final
	$(BIN)/mepipe predict cache/demo/runs/ststnet-demo --frames cache/demo/casme2/sub01/EP04_01f --picture cache/demo/prediction.png
	$(BIN)/mepipe report --dataset demo --out cache/demo/report.html
	$(BIN)/mepipe report cache/demo/runs/ststnet-demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ''

bench: $(STAMP)
	$(BIN)/python benchmarks/synth.py
	$(BIN)/python benchmarks/face.py
	$(BIN)/python benchmarks/face_accuracy.py
	$(BIN)/python benchmarks/flow.py
	$(BIN)/python benchmarks/motion_accuracy.py
	$(BIN)/python benchmarks/clip_features.py
	$(BIN)/python benchmarks/build.py

clean-cache:
	rm -rf cache/demo cache/mepipe.zarr
