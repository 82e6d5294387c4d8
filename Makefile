# sdc: one build for the library, the binaries, the tests and the benchmarks.
#   make            build everything into build/ (binaries in build/bin/)
#   make deps       apt-install missing Debian packages
#   make test       deps + build + every test (prints "N passed, N failed")
#   make asan       the unit tests under ASan + UBSan (same as make test SANITIZE=1)
#   make demo       deps + build + generate images into demo-out/
#   make eval-demo  build + score the demo model on its held-out prompts
#   make bench      benchmarks (results under bench/results/)
#   make fuzz       libFuzzer targets fuzz/fuzz_*.c, built with clang into build-fuzz/,
#                   each run FUZZ_TIME seconds (not part of make test)
#   make clean
#   make CUDA=0     build without the CUDA backend (default: on when nvcc is found)

CC      ?= cc
SANITIZE ?= 0
FUZZ    ?= 0
BUILD   ?= build
ifeq ($(FUZZ),1)
# libFuzzer: the whole library built by clang with coverage, ASan and UBSan;
# only the fuzz targets link libFuzzer's main (-fsanitize=fuzzer below).
BUILD   := build-fuzz
CC      := clang
SANFLAGS := -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer \
            -fno-sanitize-recover=undefined
OPT     := -O1
override CUDA := 0
else ifeq ($(SANITIZE),1)
BUILD   := build-asan
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
OPT     := -O1
else
SANFLAGS :=
OPT     := -O2
endif

CFLAGS  ?= $(OPT) -g
GEN     := $(BUILD)/gen
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -fopenmp -pthread -Isrc -I$(GEN) $(SANFLAGS)
LDFLAGS += -fopenmp -pthread $(SANFLAGS)
LDLIBS  += -lucp -lucs -lhiredis -lprotobuf-c -lpng -ljpeg -lcjson -lpcre2-8 -lutf8proc -lmicrohttpd -lcurl -lm

# The CUDA backend (src/backend/*.cu) is built when nvcc is found: on PATH or
# in /usr/local/cuda. ASan builds leave it out by default (the CUDA runtime
# needs ASAN_OPTIONS=protect_shadow_gap=0 under ASan); CUDA=1 forces it,
# with the nvcc objects un-sanitized.
ifeq ($(SANITIZE),1)
CUDA    ?= 0
else
CUDA    ?= auto
endif
NVCC    ?= $(firstword $(shell command -v nvcc 2>/dev/null) $(wildcard /usr/local/cuda/bin/nvcc))
ifeq ($(CUDA),auto)
override CUDA := $(if $(NVCC),1,0)
endif
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
# sm_90 (H100) code, plus PTX that newer GPUs compile at load time.
CUDA_ARCH ?= -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90
NVFLAGS ?= -O3 -g
NVFLAGS += -std=c++20 $(CUDA_ARCH) -Isrc -Werror all-warnings -Xcompiler -Wall,-Wextra,-Werror

LIB_SRC := $(wildcard src/common/*.c) $(wildcard src/backend/*.c) $(wildcard src/model/*.c) \
           $(wildcard src/cluster/*.c) $(wildcard src/loadgen/*.c)
# protoc-c output is generated into $(GEN), never committed.
PROTOS  := $(wildcard proto/*.proto)
PROTO_C := $(PROTOS:proto/%.proto=$(GEN)/%.pb-c.c)
PROTO_H := $(PROTOS:proto/%.proto=$(GEN)/%.pb-c.h)
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/obj/%.o) $(PROTO_C:$(GEN)/%.c=$(BUILD)/obj/gen/%.o)
ifeq ($(CUDA),1)
ifeq ($(NVCC),)
$(error CUDA=1 but no nvcc on PATH or in /usr/local/cuda/bin: set NVCC=..., or CUDA=0)
endif
CU_SRC  := $(wildcard src/backend/*.cu)
LIB_OBJ += $(CU_SRC:%.cu=$(BUILD)/obj/%.o)
LDFLAGS += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64
LDLIBS  += -lcublasLt -lcublas -lcudart -lstdc++
endif
LIB     := $(BUILD)/libsdc.a

TOOLS   := $(patsubst tools/%.c,$(BUILD)/bin/%,$(wildcard tools/*.c))
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNITS   := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
BENCH_SRC := $(wildcard bench/*.c)
BENCHES := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))
# GPU tests: built always, run by tests/gpu/run.sh only (not by make test).
GPU_TEST_SRC := $(wildcard tests/gpu/test_*.c)
GPU_TESTS := $(patsubst tests/gpu/%.c,$(BUILD)/tests-gpu/%,$(GPU_TEST_SRC))
# Fuzz targets: every fuzz/fuzz_NAME.c becomes build-fuzz/fuzz_NAME (make fuzz).
FUZZ_SRC := $(wildcard fuzz/fuzz_*.c)
FUZZERS := $(patsubst fuzz/%.c,$(BUILD)/%,$(FUZZ_SRC))
FUZZ_TIME ?= 180

.PHONY: all deps test unit asan bench demo eval-demo clean fuzz fuzz-build
# Generated sources are kept even when only a pattern rule mentions them.
.SECONDARY: $(PROTO_C) $(PROTO_H) $(FUZZERS:$(BUILD)/%=$(BUILD)/obj/fuzz/%.o)
all: $(LIB) $(TOOLS) $(UNITS) $(BENCHES) $(GPU_TESTS)

$(GEN)/%.pb-c.c $(GEN)/%.pb-c.h: proto/%.proto
	@mkdir -p $(GEN)
	protoc-c --proto_path=proto --c_out=$(GEN) $<

$(BUILD)/obj/gen/%.o: $(GEN)/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Wno-unused-parameter -MMD -MP -c $< -o $@

# JPEG input (img2img) through libjpeg.
$(BUILD)/obj/src/common/jpeg.o: CFLAGS += -DSDC_HAVE_JPEG

# Every object may include generated headers: generate them first.
$(BUILD)/obj/%.o: %.c | $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/obj/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -MMD -MP -c $< -o $@

# backend.c registers the CUDA backend only when it is built: recompile it
# whenever CUDA changes (the stamp's name carries the setting).
$(BUILD)/obj/src/backend/backend.o: CFLAGS += $(if $(filter 1,$(CUDA)),-DSDC_HAVE_CUDA)
$(BUILD)/obj/src/backend/backend.o: $(BUILD)/.cuda-$(CUDA)
$(BUILD)/.cuda-%:
	@mkdir -p $(dir $@)
	@rm -f $(BUILD)/.cuda-*
	@touch $@

$(LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/bin/%: $(BUILD)/obj/tools/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $< $(LIB) $(LDLIBS) -o $@

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $< $(LIB) $(LDLIBS) -o $@

$(BUILD)/tests-gpu/%: $(BUILD)/obj/tests/gpu/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $< $(LIB) $(LDLIBS) -o $@

$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $< $(LIB) $(LDLIBS) -o $@

$(BUILD)/fuzz_%: $(BUILD)/obj/fuzz/fuzz_%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -fsanitize=fuzzer $< $(LIB) $(LDLIBS) -o $@

deps:
	@tools/deps.sh

test: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) tests/run.sh

unit: all
	@BUILD=$(BUILD) tests/run.sh --unit-only

asan:
	@$(MAKE) --no-print-directory SANITIZE=1 unit

demo: deps
	@$(MAKE) --no-print-directory all
	@SDC_BIN=$(BUILD)/bin tools/demo.sh

eval-demo: all
	@SDC_BIN=$(BUILD)/bin tools/eval-demo.sh

bench:
	@tools/deps.sh --bench
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) bench/run.sh

fuzz-build: $(FUZZERS)

fuzz:
	@tools/deps.sh --fuzz
	@$(MAKE) --no-print-directory FUZZ=1 fuzz-build
	@FUZZ_TIME=$(FUZZ_TIME) FUZZ_MERGE=$(FUZZ_MERGE) fuzz/run.sh

clean:
	rm -rf build build-asan build-fuzz

-include $(LIB_OBJ:.o=.d) $(UNITS:$(BUILD)/tests/%=$(BUILD)/obj/tests/unit/%.d) $(TOOLS:$(BUILD)/bin/%=$(BUILD)/obj/tools/%.d) \
         $(GPU_TESTS:$(BUILD)/tests-gpu/%=$(BUILD)/obj/tests/gpu/%.d) \
         $(FUZZERS:$(BUILD)/%=$(BUILD)/obj/fuzz/%.d)
