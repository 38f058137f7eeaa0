# onnxprune — every set-up step lives here, so a fresh clone needs only `make demo` / `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# A CPU wheel of torch==2.13.0 lies on local disk on the team's machines; pip looks there first if it exists.
PIP_FLAGS := -q $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
OUT    := out
# when make started: demo and test print how long they took, setup included
START  := $(shell date +%s)
ELAPSED = $$(( $$(date +%s) - $(START) ))

.PHONY: demo test bench zoo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_FLAGS) --upgrade pip

# one stamp per extras set, redone when pyproject.toml changes
$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install $(PIP_FLAGS) -e .
	touch $@

$(VENV)/.finetune: pyproject.toml $(VENV)/.runtime
	$(BIN)/python -m pip install $(PIP_FLAGS) -e '.[finetune]'
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install $(PIP_FLAGS) -e '.[dev]'
	touch $@ $(VENV)/.runtime

$(VENV)/.bench: pyproject.toml $(VENV)/.dev
	$(BIN)/python -m pip install $(PIP_FLAGS) -e '.[dev,bench]'
	touch $@

## demo: the bundled digits-trained ResNet-56: inspect, fold, prune 30% (verified, then lsq-recovered, then
## fine-tuned one epoch by distillation), emit for CPU (+int8), compare, bench
demo: $(VENV)/.finetune
	@mkdir -p $(OUT)
	$(BIN)/onnxprune inspect models/digits/resnet56.onnx --input-shape input=1x3x32x32
	$(BIN)/onnxprune fold models/digits/resnet56.onnx -o $(OUT)/resnet56.folded.onnx --verify
	$(BIN)/onnxprune prune $(OUT)/resnet56.folded.onnx -o $(OUT)/resnet56.pruned.onnx --ratio 0.3 --verify \
		--plan-out $(OUT)/resnet56.plan.json
	$(BIN)/onnxprune prune $(OUT)/resnet56.folded.onnx -o $(OUT)/resnet56.recovered.onnx --plan $(OUT)/resnet56.plan.json \
		--recover lsq --data models/digits/digits_calib.npz
	$(BIN)/onnxprune finetune $(OUT)/resnet56.recovered.onnx -o $(OUT)/resnet56.finetuned.onnx \
		--teacher models/digits/resnet56.onnx --data models/digits/digits_train.npz --epochs 1 \
		--eval-data models/digits/digits_calib.npz
	$(BIN)/onnxprune emit $(OUT)/resnet56.folded.onnx --target cpu -o $(OUT)/resnet56.cpu --force --int8 \
		--data models/digits/digits_calib.npz --eval-data models/digits/digits_test.npz
	$(BIN)/python -m models.demo models/digits/resnet56.onnx $(OUT)/resnet56.folded.onnx $(OUT)/resnet56.pruned.onnx \
		$(OUT)/resnet56.recovered.onnx $(OUT)/resnet56.finetuned.onnx $(OUT)/resnet56.cpu/model.int8.onnx
	$(BIN)/onnxprune bench models/digits/resnet56.onnx $(OUT)/resnet56.folded.onnx $(OUT)/resnet56.pruned.onnx \
		$(OUT)/resnet56.recovered.onnx $(OUT)/resnet56.finetuned.onnx $(OUT)/resnet56.cpu/model.onnx \
		$(OUT)/resnet56.cpu/model.int8.onnx --runs 50 \
		--data models/digits/digits_test.npz --markdown $(OUT)/resnet56.bench.md
	@echo "make demo: done in $(ELAPSED) s (setup included)"

## test: the whole suite (about 7 minutes on 2 cores with the zoo exports cached; 11 on a fresh clone, venv and zoo exports included)
test: $(VENV)/.dev
	@$(BIN)/python -m pytest -n 2 --dist worksteal -q; rc=$$?; echo "make test: done in $(ELAPSED) s (setup included)"; exit $$rc

## bench: regenerate benchmarks/results/ — twenty scripts (twenty-three runs), one after another (hours on 2 cores): the pipeline suite,
## the export scorecard, fold vs onnxsim/onnxslim, pruning accuracy and latency vs Torch-Pruning, latency planning and its ratio estimator, its accuracy on the hard models, where its time goes, its efficiency, a plan's timing spread and the rule that accepts a plan and its sweep over the zoo,
## recovery/schedules, speed of the data-driven steps, emission, Deep Compression, zoo throughput, the hard benchmark
bench: $(VENV)/.bench
	$(BIN)/python -m benchmarks.bench_suite --out benchmarks/results
	$(BIN)/python -m benchmarks.bench_exports --out benchmarks/results
	$(BIN)/python -m benchmarks.bench_fold --out benchmarks/results
	$(BIN)/python -m benchmarks.bench_prune_accuracy --out benchmarks/results
	$(BIN)/python -m benchmarks.bench_prune_latency --out benchmarks/results
	$(BIN)/python -m benchmarks.bench_latency_plan --out benchmarks/results
	$(BIN)/python -m benchmarks.bench_latency_estimator --out benchmarks/results
	$(BIN)/python -m benchmarks.bench_latency_vs_tp --out benchmarks/results
	$(BIN)/python -m benchmarks.bench_latency_accuracy --out benchmarks/results
	$(BIN)/python -m benchmarks.bench_latency_breakdown --out benchmarks/results
	$(BIN)/python -m benchmarks.bench_latency_efficiency --out benchmarks/results
	$(BIN)/python -m benchmarks.bench_latency_efficiency --threads 2 --name latency_efficiency_2threads --out benchmarks/results
	$(BIN)/python -m benchmarks.bench_latency_drift --models studentnet,vgg16_bn,resnet50 --minutes 4 --out benchmarks/results
	$(BIN)/python -m benchmarks.bench_latency_acceptance --out benchmarks/results
	$(BIN)/python -m benchmarks.bench_latency_acceptance --models all --threads 1,2 --request 0.7,0.5 --rules new --reps 1 \
		--name latency_sweep --out benchmarks/results
	$(BIN)/python -m benchmarks.bench_recover --out benchmarks/results
	$(BIN)/python -m benchmarks.bench_emit --out benchmarks/results
	$(BIN)/python -m benchmarks.bench_speed --out benchmarks/results
	$(BIN)/python -m benchmarks.bench_compress --out benchmarks/results
	$(BIN)/python -m benchmarks.bench_zoo --out benchmarks/results
	$(BIN)/python -m benchmarks.bench_hard --out benchmarks/results
	$(BIN)/python -m benchmarks.bench_finetune --out benchmarks/results
	$(BIN)/python -m benchmarks.bench_finetune --models studentnet,vgg16_bn,resnet56 --variants lsq,lsq+finetune,cycles \
		--dc-sparsities "" --name finetune_cycles --out benchmarks/results

## zoo: export every reference model in every form to out/zoo
zoo: $(VENV)/.dev
	$(BIN)/python -m models.export_zoo $(OUT)/zoo

clean:
	rm -rf $(OUT) .zoo-cache .pytest_cache
