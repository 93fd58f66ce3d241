# Kaggle-style image classification: folds -> train -> infer -> ensemble, each a real file target.
#
#   make setup demo                 # install into .venv, then run the whole chain on data/ants-bees
#   make test                       # the test suite (what CI runs)
#   make folds|train|infer|ensemble [CONFIG=configs/x.yaml] [SET="train.batch_size=16 model.img_size=160"]
#   make train FOLD=2               # one fold only (rerun after a crash: it resumes)
#   make lr-find                    # LR range test under phase lr_find.phase's conditions
#   make mine|pseudo                # hard negatives / pseudo-labels for another experiment to train on
#   make ensemble RUNS="runs/a runs/b" NAME=ab   # average several experiments
#   make ensemble ENSEMBLE=ensembles/x.yaml      # members and method from a file (README)
#   make hard-negatives-demo        # mine, then retrain, on real handwritten digits
#
# A stage reruns only when its inputs change: the folds file when train.csv does, a fold's model
# when the config sections it reads (runs/<name>/stamps/train.yaml) or the folds do, and so on.

SHELL := /bin/bash
PY ?= .venv/bin/python
CONFIG ?= configs/ants-bees.yaml
SET ?=
STAGE_GOALS := folds train infer ensemble lr-find mine pseudo

.PHONY: help setup demo hard-negatives-demo test clean FORCE $(STAGE_GOALS)
help:
	@sed -n '2,13p' Makefile

# ----------------------------------------------------------------------------- set-up
setup: .venv/.installed

.venv/.installed: pyproject.toml constraints.txt
	python3 -m venv .venv
	.venv/bin/pip install --quiet --upgrade pip
	.venv/bin/pip install --quiet -c constraints.txt -e '.[demo,test]'
	touch $@

# `demo` re-enters Make so the config is read after set-up has installed what reads it.
demo: .venv/.installed
	$(MAKE) --no-print-directory ensemble CONFIG=configs/ants-bees.yaml

# Hard-negative mining on real handwritten digits ("is it an eight?"): round 1 trains on a tenth
# of the negatives, mines the false positives among the rest, round 2 retrains with them.
hard-negatives-demo: .venv/.installed
	$(PY) bench/make_digits.py data/digits-eights
	$(MAKE) --no-print-directory infer CONFIG=configs/digits-round2.yaml
	$(PY) bench/fp_report.py runs/digits-round1 runs/digits-round2 --test-labels data/digits-eights/test_labels.csv

test: .venv/.installed
	$(PY) -m pytest -q tests

clean:
	rm -rf runs submissions/*.csv folds/*.csv folds/*.json

# ----------------------------------------------------------------------------- stages
# (an ENSEMBLE file names its members' configs itself; CONFIG is not read then)
ifneq ($(filter $(STAGE_GOALS),$(MAKECMDGOALS)),)
ifeq ($(ENSEMBLE),)
# Under make -n or -q the stamps are compared, not written: stale stages come back in STALE.
DRY := $(if $(findstring n,$(filter-out --%,$(firstword $(MAKEFLAGS))))$(findstring q,$(filter-out --%,$(firstword $(MAKEFLAGS)))),--dry)
_VARS := $(shell $(PY) -m pipeline.config $(CONFIG) $(SET) --make $(DRY) 2>&1)
ifneq ($(filter CONFIG_ERROR:,$(firstword $(_VARS))),)
$(error $(wordlist 2,999,$(_VARS)))
endif
ifeq ($(filter RUN=%,$(_VARS)),)
$(error could not read $(CONFIG) with $(PY) (run make setup first?): $(_VARS))
endif
$(foreach kv,$(_VARS),$(eval $(kv)))
endif
endif

FOLD_IDS = $(if $(FOLD),$(FOLD),$(shell seq 0 $$(( $(N_FOLDS) - 1 ))))
FOLD_OOF = $(foreach k,$(FOLD_IDS),$(RUN)/fold$(k)/oof.csv)
ALL_OOF = $(foreach k,$(shell seq 0 $$(( $(N_FOLDS) - 1 ))),$(RUN)/fold$(k)/oof.csv)
RUNS ?= $(RUN)
SUBMISSIONS ?= submissions
NAME ?= $(EXP)

folds: $(FOLDS_FILE)
train: $(FOLD_OOF)
infer: $(RUN)/test.csv
ifeq ($(ENSEMBLE),)
ensemble: $(SUBMISSIONS)/$(NAME).csv
else
# make ensemble ENSEMBLE=ensembles/x.yaml: members' predictions first (each by its own config's
# Make run, which does nothing if they are up to date), then the ensemble the file describes.
_EVARS := $(shell $(PY) -m pipeline.ensemble $(ENSEMBLE) --make 2>&1)
ifneq ($(filter CONFIG_ERROR:,$(firstword $(_EVARS))),)
$(error $(wordlist 2,999,$(_EVARS)))
endif
$(foreach kv,$(_EVARS),$(eval $(kv)))
ensemble: $(ENS_OUT)
$(ENS_OUT): $(foreach m,$(ENS_MEMBER),$(firstword $(subst =, ,$(m)))) $(ENSEMBLE)
	$(PY) -m pipeline ensemble --spec $(ENSEMBLE)
define member_rule
$(1): FORCE
	$$(MAKE) --no-print-directory infer CONFIG=$(2) SET= FOLD= ENSEMBLE=
endef
$(foreach m,$(ENS_MEMBER),$(if $(word 2,$(subst =, ,$(m))),$(eval $(call member_rule,$(word 1,$(subst =, ,$(m))),$(word 2,$(subst =, ,$(m)))))))
endif
lr-find: $(RUN)/lr_find.csv
mine: $(RUN)/hard_negatives.csv
pseudo: $(RUN)/pseudo_labels.csv

$(FOLDS_FILE): $(TRAIN_CSV)
	$(PY) -m pipeline folds $(CONFIG) $(SET)

$(RUN)/fold%/oof.csv: $(FOLDS_FILE) $(RUN)/stamps/train.yaml $(HARD_NEG_FILE) $(PSEUDO_FILE) $(if $(filter train,$(STALE)),FORCE)
	$(PY) -m pipeline train $(CONFIG) $(SET) --fold $*

$(RUN)/test.csv: $(ALL_OOF) $(RUN)/stamps/infer.yaml $(if $(filter infer,$(STALE)),FORCE)
	$(PY) -m pipeline infer $(CONFIG) $(SET)

$(RUN)/lr_find.csv: $(FOLDS_FILE) $(RUN)/stamps/lr_find.yaml $(if $(filter lr_find,$(STALE)),FORCE)
	$(PY) -m pipeline lr_find $(CONFIG) $(SET)

$(RUN)/hard_negatives.csv: $(RUN)/test.csv $(RUN)/stamps/mine.yaml $(if $(filter mine,$(STALE)),FORCE)
	$(PY) -m pipeline mine $(CONFIG) $(SET)

$(RUN)/pseudo_labels.csv: $(RUN)/test.csv $(RUN)/stamps/pseudo.yaml $(if $(filter pseudo,$(STALE)),FORCE)
	$(PY) -m pipeline pseudo $(CONFIG) $(SET)

# Another experiment's hard negatives or pseudo-labels (train.*_from): its own Make run decides
# whether they are stale, and this experiment retrains only if that run rewrote them.
ifneq ($(HARD_NEG_FILE),)
$(HARD_NEG_FILE): FORCE
	$(MAKE) --no-print-directory mine CONFIG=$(HARD_NEG_CONFIG) SET= FOLD= ENSEMBLE=
endif
ifneq ($(PSEUDO_FILE),)
$(PSEUDO_FILE): FORCE
	$(MAKE) --no-print-directory pseudo CONFIG=$(PSEUDO_CONFIG) SET= FOLD= ENSEMBLE=
endif

$(SUBMISSIONS)/$(NAME).csv: $(foreach r,$(RUNS),$(r)/test.csv) $(SAMPLE_SUB)
	$(PY) -m pipeline ensemble $(RUNS) --name $(NAME) --out-dir $(SUBMISSIONS)

# Written by the config step above whenever their content changes; nothing to do here.
$(RUN)/stamps/%.yaml: ;
FORCE:
