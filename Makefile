# Kaggle-style image classification as a graph of real files: Make reruns a stage only when
# something it reads has changed. `make help` lists every target and variable.
#
#   train.csv ────────────folds───▶ folds/<competition>.csv      one split, shared by experiments
#                                        │
#   stamps/train-*.yaml ──train───▶ runs/<name>/fold<k>/oof.csv   per fold (FOLD=k: one fold)
#                                        │                         + best.pt, last.pt, history.csv
#   stamps/infer-*.yaml ──infer───▶ runs/<name>/test.csv          + oof.csv, tta.csv, test_fold<k>.csv
#                                        │
#                      ┌─────────────────┼─────────────────┐
#                    mine             ensemble           pseudo
#                      ▼                 ▼                 ▼
#         hard_negatives.csv   submissions/<name>.csv   pseudo_labels.csv
#                      └──▶ train of another experiment ◀──┘   (train.hard_negatives_from, ...)
#
#   (lr-find: runs/<name>/lr_find.csv from the folds and stamps/lr_find-*.yaml, beside train)
#
# A stamp, runs/<name>/stamps/<stage>-<digest>.yaml, holds the settings a stage's outputs were made
# with. pipeline/stamps.py names the stamp that matches the current settings; when none on disk
# does, the name is new, the file missing, and the stage stale.

SHELL := /bin/bash
PY ?= .venv/bin/python## the Python that has the pipeline installed
CONFIG ?= configs/ants-bees.yaml## the experiment
SET ?=## key=value overrides for this command, e.g. SET="train.batch_size=16 model.img_size=160"
FOLD ?=## train: only this fold (rerun after a crash: it resumes)
ENSEMBLE ?=## ensemble: an ensemble file (members, method); CONFIG is not read then
RUNS ?=## ensemble: experiment folders to average instead, e.g. RUNS="runs/a runs/b"
NAME ?=## ensemble with RUNS: submissions/<NAME>.csv (default: the one member's folder name, or ensemble); init: configs/<NAME>.yaml
COMP ?=## init: the competition folder whose config it writes, e.g. data/ants-bees
BACKBONE ?=## init: a timm backbone (default: EfficientNet-Lite2 or Lite0 by the data's size, with local weights)
SAMPLE ?=## init: the sample submission, where the folder has several
LABEL ?=## init: the label column, where the sample does not say
SUBMISSIONS ?= submissions## ensemble: where the submission goes
GPUS ?=## train: each fold on this many GPUs at once (DDP through torchrun; train.batch_size is split)
TORCHRUN ?= --standalone## train with GPUS: torchrun's own options, e.g. "--nnodes=2 --rdzv-endpoint=host:29400"
TARGET ?= configs/bundle-target.txt## bundle: the packages the image that predicts has, one a line; the rest are packed
BUNDLES ?= bundles## bundle: where bundles go
BUNDLE_PIP ?=## bundle: pip download options for another Python, e.g. "--python-version 3.10 --platform manylinux2014_x86_64"
LAUNCH ?=## a prefix for every stage command, e.g. "srun -n1 --gres=gpu:1": make -j 20 train LAUNCH=... farms folds
RUNS_DIR ?= runs## leaderboard: the folder of experiments it lists
SWEEP ?=## sweep: lists to combine, e.g. SWEEP="model.backbone=tf_efficientnet_lite0,tf_efficientnet_lite1 train.seed=1,2"
SPACE ?=## search: the space file (keys and their ranges or choices), e.g. configs/spaces/digits.yaml
BUDGET ?=## search: its wall-clock budget, e.g. 45m or 2h: no trial starts that would likely pass it
TRIALS ?=## search: stop once the study holds this many finished trials
FULL ?=## search: FULL=1 then trains the best trial's config on every fold and writes its submission

STAGES := folds train infer lr-find show-batch mine pseudo ensemble sanity report bundle
.PHONY: help init setup demo hard-negatives-demo elpv test bench bench-scaling bench-ablation bench-cache bench-numbers bench-retrieval clean FORCE $(STAGES) \
	leaderboard sweep search

help:  ## this list (also what a bare `make` prints)
	@echo "Targets:"
	@awk -F':.*## ' '/^[a-z-]+:.*## /{printf "  make %-20s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "Variables (make <target> VAR=value):"
	@awk -F'## ' '/^[A-Z0-9_]+ \?=/{split($$1, kv, / *\?= */); printf "  %-25s %s\n", kv[1] "=" kv[2], $$2}' $(MAKEFILE_LIST)
	@echo "Docs: README.md (start here); docs/README.md indexes a page per topic:"
	@printf '  %-30s %-30s %s\n' $(filter-out docs/README.md,$(sort $(wildcard docs/*.md)))

init:  ## configs/<NAME>.yaml for the competition in COMP, read off its tables and images: make init COMP=data/x
	$(PY) -m pipeline init "$(COMP)" $(if $(NAME),--name $(NAME)) $(if $(BACKBONE),--backbone $(BACKBONE)) \
		$(if $(SAMPLE),--sample $(SAMPLE)) $(if $(TRAIN),--train $(TRAIN)) $(if $(LABEL),--label $(LABEL))

# ----------------------------------------------------------------------------- set-up and demos
setup: .venv/.installed  ## create .venv with the pinned versions (constraints.txt)

.venv/.installed: pyproject.toml constraints.txt
	python3 -m venv .venv
	.venv/bin/pip install --quiet --upgrade pip
	.venv/bin/pip install --quiet -c constraints.txt -e '.[demo,test]'
	touch $@

# Both demos re-enter Make: the configs are read only once what reads them (and their data) exists.
demo: .venv/.installed  ## the whole chain on data/ants-bees, to submissions/ants-bees-lite2.csv
	$(MAKE) --no-print-directory ensemble CONFIG=configs/ants-bees.yaml

hard-negatives-demo: .venv/.installed  ## mine, then retrain, on real handwritten digits
	$(PY) bench/make_digits.py data/digits-eights
	$(MAKE) --no-print-directory infer CONFIG=configs/digits-round2.yaml
	$(PY) bench/fp_report.py runs/digits-round1 runs/digits-round2 --test-labels data/digits-eights/test_labels.csv

elpv: .venv/.installed  ## ELPV solar cells as a regression and an ordinal competition in data/elpv (installs elpv-dataset, 90 MB)
	$(PY) -c "import elpv_dataset" 2>/dev/null || $(PY) -m pip install --quiet -c constraints.txt 'elpv-dataset>=1.0'
	$(PY) bench/make_elpv.py data/elpv

test: .venv/.installed  ## ruff (lint, format check) and the test suite: what CI runs
	$(PY) -m ruff check pipeline tests bench tools
	$(PY) -m ruff format --check pipeline tests bench tools
	$(PY) -m pytest -q tests

bench: .venv/.installed  ## speed ratios: the loop against a plain one, the decode cache against decoding, two runs at once
	$(PY) bench/speed.py

bench-scaling: .venv/.installed  ## seconds per image at 1k, 8k and 64k real-size JPEGs, cache sizes raw and jpeg, loader speeds (about 1 h, 35 GB of disk)
	$(PY) bench/scaling.py

bench-ablation: .venv/.installed  ## each training trick alone and combined, 5-fold CV on digits and ants-bees (2 h on a CPU)
	$(PY) bench/make_digits.py --ten
	$(PY) bench/ablation.py configs/digits-10.yaml --out bench/ablation-digits-10.md
	$(PY) bench/ablation.py configs/ants-bees-lite0.yaml --out bench/ablation-ants-bees-lite0.md

bench-cache: .venv/.installed  ## the CV with the decode cache against decoding the originals, clothing and digits (40 min on a CPU)
	$(PY) bench/make_digits.py --ten
	$(PY) bench/cache_cv.py --out bench/cache-cv.md

bench-aug: elpv  ## the augmentation CV table: example pipelines and policies against the default (ELPV; digits and clothing with ONLY=)
	$(PY) bench/aug_cv.py --only $(or $(ONLY),elpv) --out bench/aug-cv.md

bench-numbers: elpv  ## the numbers' 5-fold CV table on ELPV: baselines, losses, y_range, cut-points (about 1 h on a CPU)
	$(PY) bench/elpv_cv.py --out bench/elpv-cv.md

bench-retrieval: .venv/.installed  ## identification on the dogs set: CV and test MAP@5 of the constant, ImageNet embeddings and each head (about 1 h on a CPU)
	$(PY) bench/retrieval_cv.py --out bench/retrieval-cv.md

clean:  ## delete every run, submission, bundle, folds file and the decode cache
	rm -rf runs cache bundles submissions/*.csv submissions/*.json submissions/*.html folds/*.csv folds/*.json

# ----------------------------------------------------------------------------- many experiments
leaderboard:  ## RUNS_DIR/leaderboard.csv and .html: every experiment's CV, spread, TTA, time, status
	$(PY) -m pipeline leaderboard $(RUNS_DIR)

# The sweep's configs are written when Make reads this file (make -n sweep too), so that the
# ensemble's Make can plan each of them; an existing one is kept, edited or not.
ifneq ($(filter sweep,$(MAKECMDGOALS)),)
SWEEP_OUT := $(shell $(PY) -m pipeline sweep $(CONFIG) $(SWEEP) --submissions $(SUBMISSIONS) 2>&1)
ifneq ($(.SHELLSTATUS),0)
$(error $(SWEEP_OUT))
endif
SWEEP_ENSEMBLE := $(lastword $(SWEEP_OUT))
$(if $(word 2,$(SWEEP_OUT)),$(info $(filter-out $(SWEEP_ENSEMBLE),$(SWEEP_OUT))))
endif

sweep:  ## configs/sweeps/: one experiment per combination of SWEEP's lists, trained (-j, LAUNCH=), their fitted ensemble, the leaderboard
	$(MAKE) --no-print-directory ensemble ENSEMBLE=$(SWEEP_ENSEMBLE) SET= FOLD=
	$(PY) -m pipeline leaderboard $(RUNS_DIR)

search:  ## Optuna over SPACE's keys, each trial fold 0 (pruned on its valid loss), within BUDGET; the best as a config
	$(if $(SPACE),,$(error make search: SPACE= names the space file, e.g. SPACE=configs/spaces/digits-10.yaml))
	$(PY) -m pipeline search $(CONFIG) $(SPACE) $(if $(BUDGET),--budget $(BUDGET)) $(if $(TRIALS),--trials $(TRIALS)) $(if $(FULL),--full) $(SET)

# ----------------------------------------------------------------------------- the stages
folds:     ## folds/<competition>.csv, once per competition
train:     ## every fold's model (FOLD=k: one), resuming a killed fold
lr-find:   ## the LR range test under phase lr_find.phase's conditions
show-batch: ## runs/<name>/batch.png: training batches as the model gets them, and the TTA views
infer:     ## test and out-of-fold probabilities, with TTA
mine:      ## hard negatives for another experiment to train on
pseudo:    ## pseudo-labels for another experiment to train on
ensemble:  ## the submission: one experiment, ENSEMBLE=file, or RUNS="..." NAME=...
sanity:    ## can the model overfit one batch? fails saying so if not; writes nothing
report:    ## runs/<name>/report.html: one self-contained page (CV, curves, errors, config)
bundle:    ## bundles/<name>/: checkpoints, wheels and predict.py, for a notebook with no internet

# The config's paths, read once: RUN, FOLDS_FILE, N_FOLDS, STAMP_<stage>, and TRAINS_ON/OTHER for
# other experiments' outputs (pipeline/make_bridge.py prints them as NAME=value words).
ifneq ($(filter $(STAGES),$(MAKECMDGOALS)),)
VARS := $(shell $(PY) -m pipeline make-vars $(if $(ENSEMBLE),--ensemble $(ENSEMBLE),$(CONFIG) $(SET)) 2>&1)
ifneq ($(.SHELLSTATUS),0)
$(error $(or $(VARS),could not run $(PY) (run make setup first?)))
endif
$(foreach v,$(VARS),$(eval $(v)))
ifneq ($(ENSEMBLE),)
ifneq ($(filter-out ensemble bundle,$(MAKECMDGOALS)),)
$(error ENSEMBLE= names an ensemble file: only `make ensemble` and `make bundle` take it)
endif
endif
endif

# The submission's (and bundle's) name: NAME, else as `python -m pipeline ensemble` names its
# members' blend (one run: its folder; several: ensemble), never the config's own experiment.
SUB_NAME = $(or $(NAME),$(if $(RUNS),$(if $(word 2,$(RUNS)),ensemble,$(notdir $(patsubst %/,%,$(RUNS)))),$(EXP)))
FOLDS := $(if $(N_FOLDS),$(shell seq 0 $$(( $(N_FOLDS) - 1 ))))
# Each target names every file a later stage reads, so deleting one (best.pt, oof.csv, ...) makes
# its stage rerun; a damaged one (make_bridge.damaged: a torn checkpoint, an unreadable CSV) is
# forced through BROKEN. A pattern rule's targets, and those of `&:`, are made by one recipe run.
fold_out = $(RUN)/fold$(1)/oof.csv $(RUN)/fold$(1)/best.pt
INFER_OUT = $(RUN)/test.csv $(RUN)/oof.csv $(foreach k,$(FOLDS),$(RUN)/test_fold$(k).csv)
# ($$(b) inside eval: a name may hold =, which eval would read as an assignment: x--lr=0.1)
$(foreach b,$(BROKEN),$(eval $$(b): FORCE))
# Make deletes a target its recipe had touched when Ctrl-C or SIGTERM stops it. Every file here is
# written whole (beside it, then renamed) and a fold's oof.csv last, so a fold keeps its best.pt
# and resumes from last.pt; an infer stopped midway leaves older files, which Make sees as stale.
.PRECIOUS: $(foreach k,$(FOLDS),$(call fold_out,$(k))) $(INFER_OUT)

ifeq ($(ENSEMBLE),)
folds: $(FOLDS_FILE)
train: $(foreach k,$(or $(FOLD),$(FOLDS)),$(call fold_out,$(k)))
lr-find: $(RUN)/lr_find.csv
show-batch: $(RUN)/batch.png
infer: $(INFER_OUT)
mine: $(RUN)/hard_negatives.csv
pseudo: $(RUN)/pseudo_labels.csv
report: $(RUN)/report.html
ensemble: $(SUBMISSIONS)/$(SUB_NAME).csv
bundle: $(BUNDLES)/$(SUB_NAME)/target/$(notdir $(TARGET))
sanity: $(FOLDS_FILE)
	$(PIPELINE) sanity $(ARGS)
else
ensemble: $(ENS_OUT)
bundle: $(BUNDLES)/$(ENS_NAME)/target/$(notdir $(TARGET))
endif

# How a stage runs: through LAUNCH when given (the launcher places it); otherwise here, with a
# share of the cores when make -j runs several (PIPELINE_JOBS; MAKEFLAGS holds -jN only in recipes).
JOBS = $(or $(patsubst -j%,%,$(filter -j%,$(MAKEFLAGS))),1)
RUN_STAGE = $(if $(LAUNCH),$(LAUNCH),PIPELINE_JOBS=$(JOBS)) $(PY) -m
PIPELINE = $(RUN_STAGE) pipeline
ARGS = $(strip $(CONFIG) $(SET))
TRAIN = $(RUN_STAGE) $(if $(GPUS),torch.distributed.run $(TORCHRUN) --nproc_per_node=$(GPUS) -m )pipeline train

# Not train.csv's time but its bytes (make-vars compares its digest): a copied or moved competition
# folder leaves every fold up to date. When the folds stage finds the rows unchanged it leaves the
# file's time alone, and Make then remakes nothing after it.
$(FOLDS_FILE): $(FOLDS_STALE)
	$(PIPELINE) folds $(ARGS)

$(RUN)/fold%/oof.csv $(RUN)/fold%/best.pt: $(FOLDS_FILE) $(STAMP_train) $(TRAINS_ON)
	$(TRAIN) $(ARGS) --fold $*

$(RUN)/lr_find.csv: $(FOLDS_FILE) $(STAMP_lr_find) $(TRAINS_ON)
	$(PIPELINE) lr_find $(ARGS)

$(RUN)/batch.png: $(FOLDS_FILE) $(STAMP_show_batch) $(TRAINS_ON)
	$(PIPELINE) show_batch $(ARGS)

$(INFER_OUT) &: $(foreach k,$(FOLDS),$(call fold_out,$(k))) $(STAMP_infer)
	$(PIPELINE) infer $(ARGS)

$(RUN)/hard_negatives.csv: $(RUN)/test.csv $(RUN)/oof.csv $(STAMP_mine)
	$(PIPELINE) mine $(ARGS)

$(RUN)/pseudo_labels.csv: $(RUN)/test.csv $(RUN)/oof.csv $(STAMP_pseudo)
	$(PIPELINE) pseudo $(ARGS)

$(RUN)/report.html: $(INFER_OUT) $(wildcard $(RUN)/lr_find.csv $(RUN)/batch.png $(RUN)/hard_negatives.csv $(RUN)/pseudo_labels.csv)
	$(PIPELINE) report $(ARGS)

$(SUBMISSIONS)/$(SUB_NAME).csv: $(or $(foreach r,$(RUNS),$(r)/test.csv $(r)/oof.csv),$(INFER_OUT)) $(SAMPLE_SUB)
	$(PIPELINE) ensemble $(or $(RUNS),$(RUN)) --name $(SUB_NAME) --out-dir $(SUBMISSIONS)

$(ENS_OUT): $(MEMBERS) $(ENS_FILES)
	$(PIPELINE) ensemble --spec $(ENSEMBLE)

# A bundle packs what made the submission: it is made again whenever the submission is, or the
# target file, which it keeps a copy of (another TARGET= names another copy, so it is packed again).
BUNDLE_ARGS = --out-dir $(BUNDLES) --target $(TARGET) $(if $(BUNDLE_PIP),--pip-args="$(BUNDLE_PIP)")
ifeq ($(ENSEMBLE),)
$(BUNDLES)/$(SUB_NAME)/target/$(notdir $(TARGET)): $(SUBMISSIONS)/$(SUB_NAME).csv $(TARGET)
	$(PIPELINE) bundle $(or $(RUNS),$(RUN)) --name $(SUB_NAME) $(BUNDLE_ARGS)
else
$(BUNDLES)/$(ENS_NAME)/target/$(notdir $(TARGET)): $(ENS_OUT) $(TARGET)
	$(PIPELINE) bundle --spec $(ENSEMBLE) $(BUNDLE_ARGS)
endif

# A stage writes its stamp when it starts. A stamp that does not exist yet has no recipe: Make
# takes it as just changed, so the stage that depends on it reruns.
$(STAMP_train) $(STAMP_lr_find) $(STAMP_show_batch) $(STAMP_infer) $(STAMP_mine) $(STAMP_pseudo):

# Another experiment's output first (an ensemble member's test.csv, the hard negatives or
# pseudo-labels a fold trains on): that experiment's own Make run brings it up to date, and what
# reads it reruns only if that run rewrote it. OTHER holds file|target|config triples.
define another_experiment
$$(word 1,$$(subst |, ,$$(o))): FORCE
	@$$(MAKE) --no-print-directory $(2) CONFIG=$(3) SET= FOLD= ENSEMBLE= RUNS= NAME=
endef
$(foreach o,$(OTHER),$(eval $(call another_experiment,,$(word 2,$(subst |, ,$(o))),$(word 3,$(subst |, ,$(o))))))
FORCE:
