# Rebuild the shipped default model from scratch: data -> judges -> teacher, checkers -> encoder -> generator ->
# eval -> ONNX bundle (+ the judge-checked INT8 generator) -> s2i_runtime/default_bundle/.   `make default-model`
# Override the locations, e.g.  make default-model DATA=/tmp/shapes RUN=/tmp/run64
# Any stage can be continued after an interruption with `s2i-train <stage> --run $(RUN) --resume`.

VENV ?= .venv
BIN ?= $(VENV)/bin
DATA ?= build/data-shapes
RUN ?= build/run-shapes64
CONFIG ?= shapes64
BUNDLE_OUT ?= s2i_runtime/default_bundle
# The classifier-based encoder baseline with the same budget, for the retrieval comparison.
RUN_CLASSIFIER ?= $(RUN)-classifier
# The teacher-student encoder on Li et al.'s own targets (each caption's image, raw teacher features), same budget.
RUN_PER_IMAGE ?= $(RUN)-per-image

.PHONY: default-model data train evaluate export encoder-baseline encoder-per-image clean-run examples-image

default-model: export

data: $(DATA)/captions.jsonl

$(DATA)/captions.jsonl:
	$(BIN)/s2i-train data shapes --out $(DATA) --images-per-class 60 --captions-per-image 2 \
		--image-size 128 --overwrite

train: $(RUN)/generator.safetensors

$(RUN)/generator.safetensors: $(DATA)/captions.jsonl
	$(BIN)/s2i-train judge --run $(RUN) --data $(DATA) --config $(CONFIG)
	$(BIN)/s2i-train silhouette-judge --run $(RUN)
	$(BIN)/s2i-train teacher --run $(RUN)
	$(BIN)/s2i-train checkers --run $(RUN)
	$(BIN)/s2i-train encoder --run $(RUN)
	$(BIN)/s2i-train generator --run $(RUN)

evaluate: $(RUN)/eval.json

$(RUN)/eval.json: $(RUN)/generator.safetensors
	$(BIN)/s2i-train eval --run $(RUN)

# An INT8 generator that fails its judge check is left out (the command says why): the bundle ships without it.
export: $(RUN)/eval.json
	$(BIN)/s2i-export onnx --run $(RUN) --out $(RUN)/bundle
	-$(BIN)/s2i-export int8 $(RUN)/bundle --run $(RUN) --data $(DATA)
	rm -rf $(BUNDLE_OUT).tmp && cp -r $(RUN)/bundle $(BUNDLE_OUT).tmp
	chmod -R a+rX $(BUNDLE_OUT).tmp
	rm -rf $(BUNDLE_OUT) && mv $(BUNDLE_OUT).tmp $(BUNDLE_OUT)
	du -sh $(BUNDLE_OUT)

# Same data, teacher-free classifier objective, same encoder budget; compare with `s2i-train eval`.
encoder-baseline: $(RUN)/generator.safetensors
	mkdir -p $(RUN_CLASSIFIER)
	cp $(RUN)/judge.json $(RUN)/judge.safetensors $(RUN_CLASSIFIER)/
	$(BIN)/s2i-train encoder --run $(RUN_CLASSIFIER) --data $(DATA) --config $(RUN)/config.toml \
		--set encoder.objective=classifier
	$(BIN)/s2i-train eval --run $(RUN_CLASSIFIER)

# Same data, teacher and budget, Li et al.'s targets: the teacher's raw features of each caption's own image.
encoder-per-image: $(RUN)/generator.safetensors
	mkdir -p $(RUN_PER_IMAGE)
	cp $(RUN)/judge.json $(RUN)/judge.safetensors $(RUN)/teacher.json $(RUN)/teacher.safetensors $(RUN_PER_IMAGE)/
	$(BIN)/s2i-train encoder --run $(RUN_PER_IMAGE) --data $(DATA) --config $(RUN)/config.toml \
		--set encoder.teacher_target=image --set encoder.teacher_whiten=none
	$(BIN)/s2i-train eval --run $(RUN_PER_IMAGE)

clean-run:
	rm -rf $(RUN) $(RUN_CLASSIFIER) $(RUN_PER_IMAGE)

# README's picture: what the shipped model draws for the example WAVs, four samples each (one row per WAV).
examples-image:
	rm -rf build/examples && $(BIN)/s2i-run infer s2i_runtime/examples/large_red_star.wav \
		s2i_runtime/examples/small_blue_circle.wav s2i_runtime/examples/big_green_triangle.wav \
		--bundle $(BUNDLE_OUT) --num-images 4 --grid --out build/examples
	cp build/examples/grid.png docs/examples.png
